"""Torch module -> ONNX file, the way every clip-edge export does it (opset 17,
TorchScript exporter, dynamic batch, checked by onnx.checker)."""

from __future__ import annotations

import pathlib

from ..errors import ExportError


def wrap(fn, owner):
    """A torch module whose forward is `fn` (one tensor in, embeddings out).

    `owner` (the model `fn` reads) is registered as a submodule so its weights
    export as initializers, which the quantisers and the f16 converter rewrite.
    """
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.owner = owner

        def forward(self, x):
            return fn(x)

    return Tower().eval()


class ImageTower:
    def __init__(self, model):
        self.module = wrap(model.encode_image, model)


def export_onnx(module, example, path: pathlib.Path, input_name: str) -> None:
    import onnx
    import torch

    # Not under no_grad: there PyTorch takes the fused attention fast path
    # (aten::_native_multi_head_attention), which has no ONNX export.
    try:
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=["embedding"],
                          opset_version=17, dynamo=False, verbose=False,
                          dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}})
    except Exception as e:
        raise ExportError(f"cannot export the {input_name} tower to ONNX: {' '.join(str(e).split())[:300]}") from e
    onnx.checker.check_model(str(path))


