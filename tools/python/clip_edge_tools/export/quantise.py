"""Quantised and half-size forms of an ONNX image encoder (docs/bundle.md,
"Precisions"): weight-only int8 (the default; folded to f32 at load, and run on
tract's int8 kernels as int8-compute), ONNX Runtime's dynamic int8, f16 storage."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np

from ..errors import ExportError


def quantise_int8_dynamic(src: pathlib.Path, dst: pathlib.Path, per_channel: bool = False) -> None:
    """ONNX Runtime dynamic quantisation: int8 weights, activations quantised at run time (MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)


def quantise_int8_weights(src: pathlib.Path, dst: pathlib.Path, min_elements: int = 1024,
                          keep_f32: Sequence[str] = ()) -> int:
    """Weight-only int8: every large constant weight of a Conv, Gemm or MatMul
    is stored as int8 with one f32 scale per output channel (symmetric, no
    zero point) and turned back into f32 by Cast + Mul in the graph.

    tract folds those constant Cast and Mul nodes when it optimises the model,
    so in memory the weights are f32 again and inference runs at f32 speed,
    while the file is about 4x smaller. (ONNX dynamic or QDQ int8 graphs run
    2-6x slower than f32 in tract 0.23: docs/performance.md.) The weights of
    nodes whose name contains one of `keep_f32` stay f32. Returns the number
    of weights quantised.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    added = []
    for init in list(graph.initializer):
        uses = consumers.get(init.name, [])
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_elements or len(init.dims) < 2:
            continue
        if len(uses) != 1 or uses[0][1] != 1 or uses[0][0].op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        node = uses[0][0]
        if any(k in node.name for k in keep_f32):
            continue
        w = numpy_helper.to_array(init)
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            axis = 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
        else:
            axis = w.ndim - 1
        scale = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis), keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(q, init.name + "_int8"),
                                  numpy_helper.from_array(scale.astype(np.float32), init.name + "_scale")])
        added += [helper.make_node("Cast", [init.name + "_int8"], [init.name + "_dq"], to=TensorProto.FLOAT,
                                   name=init.name + "_cast_f32"),
                  helper.make_node("Mul", [init.name + "_dq", init.name + "_scale"], [init.name],
                                   name=init.name + "_rescale")]
    for node in reversed(added):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return len(added) // 2


def make_int8(src: pathlib.Path, dst: pathlib.Path, mode: str, keep_f32: Sequence[str] = ()) -> None:
    """The int8 image encoder in `mode`: "weights" (weight-only, folded to f32
    at load: smaller and as fast as f32 in tract; nodes named with one of
    `keep_f32` stay f32) or "dynamic" (ONNX Runtime's MatMulInteger form: fast
    in ONNX Runtime, slower than f32 in tract)."""
    if mode == "weights":
        quantise_int8_weights(src, dst, keep_f32=keep_f32)
    elif mode == "dynamic":
        quantise_int8_dynamic(src, dst)
    else:
        raise ExportError(f"unknown int8 mode {mode!r} (weights, dynamic)")


def convert_f16_weights(src: pathlib.Path, dst: pathlib.Path, min_elements: int = 1024) -> None:
    """f16 storage: large f32 initializers stored as f16 with a Cast back to f32.

    The arithmetic stays f32 (boards without fp16 units lose nothing); the
    file is about half the size. tract folds the constant casts at load.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_elements:
            continue
        arr = numpy_helper.to_array(init).astype(np.float16)
        half = numpy_helper.from_array(arr, init.name + "_f16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_cast_f32"))
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))

