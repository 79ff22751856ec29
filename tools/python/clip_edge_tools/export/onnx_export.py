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


def fuse_pads_into_convs(path: pathlib.Path, example_shape: tuple[int, ...]) -> int:
    """Rewrites `path` in place: each zero-constant Pad of the spatial axes
    whose only consumer is a Conv becomes that Conv's `pads` attribute (the
    same arithmetic). PyTorch exports TensorFlow-style asymmetric SAME padding
    as F.pad + Conv; ONNX Runtime fuses the pair at load, tract 0.23 runs the
    Pad as its own copy of the activation. The pads come from a constant
    subgraph, evaluated here once with ONNX Runtime. Returns the count fused."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    pads_nodes = [n for n in graph.node if n.op_type == "Pad"]
    if not pads_nodes:
        return 0
    probe = onnx.load(str(path))
    for n in pads_nodes:
        probe.graph.output.append(helper.make_tensor_value_info(n.input[1], TensorProto.INT64, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.zeros(example_shape, np.float32)}
    values = sess.run([n.input[1] for n in pads_nodes], feed)
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    fused = 0
    for pad, pads in zip(pads_nodes, values):
        users = consumers.get(pad.output[0], [])
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        constant_value = len(pad.input) > 2 and pad.input[2]
        pads = [int(p) for p in pads]  # begins of N, C, H, W, then their ends
        if (len(users) != 1 or users[0].op_type != "Conv" or mode != b"constant" or constant_value
                or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0):
            continue
        conv = users[0]
        old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        for a in [a for a in conv.attribute if a.name in ("pads", "auto_pad")]:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", [old[0] + pads[2], old[1] + pads[3],
                                                             old[2] + pads[6], old[3] + pads[7]]))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        fused += 1
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return fused
