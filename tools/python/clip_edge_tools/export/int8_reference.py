"""The arithmetic of clip-edge's int8-compute form (runtime/src/int8/), as an
ONNX graph that ONNX Runtime runs: an independent reference for the tests.

For each layer the runtime computes in int8 (the list comes from
`clip-edge bench --precision int8-compute --json`, `ClipEdge.int8_layers`), the f32 graph's node is
replaced by:

    s_w[c]  = max|W[c, ...]| / 127          (per output channel, at export)
    q_w     = round_half_even(W / s_w)       (int8 values, kept as floats)
    s_x     = max(max|x| over the shared axes, FLT_MIN) / 127
    q_x     = round_half_even(x * (127 / max(...)))
    y       = op(q_x, q_w) * s_x * s_w + bias

with the activation scale shared per row (the last axis of a MatMul or Gemm
input, the channel axis of a 1x1 Conv) or per tensor (any other Conv), as the
runtime reports. The integer products are summed in f32 here and exactly in
i32 by tract, so the two agree to float rounding, not bit for bit.

  .venv/bin/python tools/python/int8_reference.py --model F.onnx --layers layers.json --out ref.onnx
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def onnx_name(tract_name: str, names: set[str]) -> str | None:
    """The ONNX node a tract node came from: tract keeps the name and may add
    a suffix (`.einsum`, `.ab`, ...)."""
    best = None
    for n in names:
        if (tract_name == n or tract_name.startswith(n + ".")) and (best is None or len(n) > len(best)):
            best = n
    return best


def quantise_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    w = w.astype(np.float32)
    other = tuple(a for a in range(w.ndim) if a != axis)
    m = np.abs(w).max(axis=other, keepdims=True).astype(np.float32)
    s = np.where((m > 0) & np.isfinite(m), m / np.float32(127.0), np.float32(1.0)).astype(np.float32)
    q = np.clip(np.round(w / s), -127, 127).astype(np.float32)
    return q, s.reshape(-1)


def emulate(model_path: pathlib.Path, layers: list[dict], out: pathlib.Path) -> int:
    """Writes the reference graph; returns how many layers it rewrote."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    by_name = {n.name: n for n in g.node}
    wanted: dict[str, str] = {}
    for layer in layers:
        kind = layer["compute"]
        if kind not in ("int8_per_row", "int8_per_tensor"):
            continue
        name = onnx_name(layer["name"], set(by_name))
        if name is None:
            raise SystemExit(f"no ONNX node for tract layer {layer['name']}")
        wanted[name] = kind
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    new_nodes = []
    extra_inits = []
    count = 0

    def const(name: str, value: np.ndarray) -> str:
        extra_inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    for node in g.node:
        kind = wanted.get(node.name)
        if kind is None:
            new_nodes.append(node)
            continue
        count += 1
        p = node.name + ".int8ref"
        x, w_name = node.input[0], node.input[1]
        w = numpy_helper.to_array(inits[w_name])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMul":
            w_axis, x_axes, c_shape = w.ndim - 1, [-1], None
        elif node.op_type == "Gemm":
            if attrs.get("transA", 0) or abs(attrs.get("alpha", 1.0) - 1.0) > 0:
                raise SystemExit(f"{node.name}: Gemm with transA or alpha != 1 is not emulated")
            w_axis, x_axes, c_shape = (0 if attrs.get("transB", 0) else 1), [-1], None
        elif node.op_type == "Conv":
            w_axis = 0
            x_axes = [1] if kind == "int8_per_row" else None
            c_shape = [1, w.shape[0]] + [1] * (w.ndim - 2)
        else:
            raise SystemExit(f"{node.name}: {node.op_type} is not emulated")
        q, s_w = quantise_weight(w, w_axis)
        qw = const(p + ".q_w", q)
        sw = const(p + ".s_w", s_w if c_shape is None else s_w.reshape(c_shape))
        if x_axes is None:
            reduce = helper.make_node("ReduceMax", [p + ".abs"], [p + ".max0"], keepdims=1)
        elif opset >= 18:
            axes = p + ".axes"
            extra_inits.append(numpy_helper.from_array(np.asarray(x_axes, dtype=np.int64), axes))
            reduce = helper.make_node("ReduceMax", [p + ".abs", axes], [p + ".max0"], keepdims=1)
        else:
            reduce = helper.make_node("ReduceMax", [p + ".abs"], [p + ".max0"], keepdims=1, axes=x_axes)
        nodes = [
            helper.make_node("Abs", [x], [p + ".abs"]),
            reduce,
            helper.make_node("Max", [p + ".max0", const(p + ".tiny", FLT_MIN)], [p + ".max"]),
            helper.make_node("Div", [const(p + ".c127", np.float32(127.0)), p + ".max"], [p + ".inv"]),
            helper.make_node("Div", [p + ".max", p + ".c127"], [p + ".s_x"]),
            helper.make_node("Mul", [x, p + ".inv"], [p + ".scaled"]),
            helper.make_node("Round", [p + ".scaled"], [p + ".q_x"]),
        ]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "Conv":
            nodes.append(helper.make_node("Conv", [p + ".q_x", qw], [p + ".acc"], **attrs))
        elif node.op_type == "Gemm":
            nodes.append(helper.make_node("Gemm", [p + ".q_x", qw], [p + ".acc"], transB=attrs.get("transB", 0)))
        else:
            nodes.append(helper.make_node("MatMul", [p + ".q_x", qw], [p + ".acc"]))
        # s_x is [..., 1] per row, [N, 1, H, W] per pixel or all ones per tensor:
        # it broadcasts over the output as it is.
        nodes.append(helper.make_node("Mul", [p + ".s_x", sw], [p + ".scale"]))
        final = node.output[0] if bias is None else p + ".nobias"
        nodes.append(helper.make_node("Mul", [p + ".acc", p + ".scale"], [final]))
        if bias is not None:
            b = bias
            if node.op_type == "Conv":
                shape = p + ".bias_shape"
                extra_inits.append(numpy_helper.from_array(np.asarray(c_shape, dtype=np.int64), shape))
                nodes.append(helper.make_node("Reshape", [bias, shape], [p + ".bias"]))
                b = p + ".bias"
            nodes.append(helper.make_node("Add", [final, b], [node.output[0]]))
        new_nodes.extend(nodes)
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + extra_inits)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return count


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="int8_reference.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=pathlib.Path, required=True)
    p.add_argument("--layers", type=pathlib.Path, required=True, help="clip-edge bench --json output")
    p.add_argument("--out", type=pathlib.Path, required=True)
    a = p.parse_args(argv)
    report = json.loads(a.layers.read_text())
    n = emulate(a.model, report["int8_compute"]["layers"], a.out)
    print(f"{a.out}: {n} layers in emulated int8")


if __name__ == "__main__":
    main()
