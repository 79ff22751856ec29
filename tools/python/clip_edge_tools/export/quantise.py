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
    added = []
    for init, _node, axis in _quantisable(model, min_elements, keep_f32):
        w = numpy_helper.to_array(init)
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


def _quantisable(model, min_elements: int, keep_f32: Sequence[str]):
    """(initializer, node, axis of its output channels) of each weight quantise_int8_weights stores as int8:
    a large f32 constant read by one Conv, Gemm or MatMul as its weight, in a node named with none of `keep_f32`."""
    from onnx import TensorProto

    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    out = []
    for init in model.graph.initializer:
        uses = consumers.get(init.name, [])
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_elements or len(init.dims) < 2:
            continue
        if len(uses) != 1 or uses[0][1] != 1 or uses[0][0].op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        node = uses[0][0]
        if any(k in node.name for k in keep_f32):
            continue
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            axis = 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
        else:
            axis = len(init.dims) - 1
        out.append((init, node, axis))
    return out


def _unit_outputs(path: pathlib.Path, inputs: np.ndarray) -> np.ndarray:
    """The model's first output on `inputs` (a batch for its first input) in ONNX Runtime, rows normalised."""
    import onnxruntime as ort

    from .verify import unit

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return unit(np.concatenate([sess.run(None, {name: inputs[i:i + 16]})[0] for i in range(0, len(inputs), 16)]))


def _error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean (1 - cosine) between rows of unit vectors."""
    return float(1.0 - (a * b).sum(-1).mean())


def output_error(reference: pathlib.Path, other: pathlib.Path, inputs: np.ndarray) -> float:
    """Mean (1 - cosine) between the first outputs of two models on `inputs`, run in ONNX Runtime."""
    return _error(_unit_outputs(reference, inputs), _unit_outputs(other, inputs))


def int8_sensitivity(src: pathlib.Path, inputs: np.ndarray, keep_f32: Sequence[str] = (),
                     min_elements: int = 1024) -> list[dict]:
    """Per weight that quantise_int8_weights would store as int8 (keeping `keep_f32`): output_error between the
    model with none and with that weight alone in int8, on `inputs`; as {"node", "elements", "error"}, in graph
    order."""
    import tempfile

    import onnx

    reference = _unit_outputs(src, inputs)
    weights = [(node.name, int(np.prod(init.dims)))
               for init, node, _ in _quantisable(onnx.load(str(src)), min_elements, keep_f32)]
    out = []
    with tempfile.TemporaryDirectory() as tmp_s:
        one = pathlib.Path(tmp_s) / "one.onnx"
        for name, elements in weights:
            others = [n for n, _ in weights if n != name]
            if quantise_int8_weights(src, one, min_elements, keep_f32=(*keep_f32, *others)) != 1:
                raise ExportError(f"{src}: node {name!r}'s name contains another quantisable node's name")
            out.append({"node": name, "elements": elements, "error": _error(_unit_outputs(one, inputs), reference)})
    return out


def keep_f32_by_sensitivity(sensitivity: list[dict], budget_bytes: int) -> list[str]:
    """The nodes to keep f32 in the int8 form: in order of error per element (int8_sensitivity), as long as
    their f32 weights (3 more bytes per element than int8) fit in `budget_bytes` together."""
    kept, spent = [], 0
    for s in sorted(sensitivity, key=lambda s: -s["error"] / s["elements"]):
        if spent + 3 * s["elements"] > budget_bytes:
            break
        kept.append(s["node"])
        spent += 3 * s["elements"]
    return kept


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

