#!/usr/bin/env python3
"""Per-operator time of one image encoder in tract and in ONNX Runtime, side by
side, grouped into the operator classes of the ONNX graph, so that the gap
between the engines is located, not only measured.

ONNX Runtime's side comes from its own profiler (SessionOptions.enable_profiling:
one event per node run, `<node>_kernel_time`); tract's from the profile example
(tools/examples/profile.rs, every node of the optimised plan timed). tract's
nodes carry the name of the ONNX node they were made from (plus suffixes such
as `.matmatmul`, `.einsum`, `.pad`), so each is charged to that ONNX node's
class. Classes: conv (group 1, kernel > 1), conv 1x1, depthwise (groups > 1),
matmul (MatMul/Gemm with a constant weight), attention products (MatMul of two
activations), gelu (Erf and its Mul/Add/Div around it, or a fused Gelu), norm
(LayerNorm and its parts), softmax, element-wise (Add/Mul/Sub/Div/...),
layout (Reshape/Transpose/Pad/Slice/Concat/...), other.

  .venv/bin/python tools/bench/op_profile.py --bundle .cache/bench/MobileCLIP2-S0 [--threads 1] [--runs 20]

Needs the release profile example (built here if missing) and onnxruntime.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import subprocess
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
ELEMENTWISE = {"Add", "Mul", "Sub", "Div", "Relu", "Sigmoid", "Clip", "Max", "Min", "Pow", "Sqrt", "Neg",
               "HardSigmoid", "HardSwish", "Tanh", "Exp", "Abs", "Cast", "Where", "Equal"}
LAYOUT = {"Reshape", "Transpose", "Pad", "Slice", "Concat", "Flatten", "Squeeze", "Unsqueeze", "Gather", "Split",
          "Expand", "Shape", "Identity", "Constant", "ConstantOfShape"}


def classes(model_path: pathlib.Path) -> dict[str, str]:
    """ONNX node name -> operator class."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    g = model.graph
    inits = {i.name for i in g.initializer}
    produced_by_const = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    consts = inits | produced_by_const
    out: dict[str, str] = {}
    erf_outputs: set[str] = set()
    for n in g.node:
        if n.op_type == "Erf":
            erf_outputs.update(n.output)
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        t = n.op_type
        if t == "Conv":
            w = next((i for i in g.initializer if i.name == n.input[1]), None)
            ks = list(w.dims[2:]) if w is not None else attrs.get("kernel_shape", [])
            if attrs.get("group", 1) > 1:
                c = "depthwise conv"
            elif all(k == 1 for k in ks):
                c = "conv 1x1"
            else:
                c = "conv kxk"
        elif t in ("MatMul", "Gemm"):
            c = "matmul (weights)" if any(i in consts for i in n.input[1:2]) else "attention products"
        elif t in ("Erf", "Gelu") or any(i in erf_outputs for i in n.input):
            c = "gelu"
        elif t in ("LayerNormalization", "ReduceMean", "BatchNormalization", "InstanceNormalization"):
            c = "norm"
        elif t == "Softmax":
            c = "softmax"
        elif t in ELEMENTWISE:
            c = "element-wise"
        elif t in LAYOUT:
            c = "layout"
        elif t in ("GlobalAveragePool", "AveragePool", "MaxPool", "ReduceMax", "ReduceSum"):
            c = "pooling"
        else:
            c = "other: " + t
        out[n.name] = c
    return out


def onnx_node_of(name: str, names: list[str]) -> str | None:
    best = None
    for n in names:
        matches = name == n or name.startswith(n + ".") or name.startswith(n + "_")
        if matches and (best is None or len(n) > len(best)):
            best = n
    return best


def ort_profile(model: pathlib.Path, size: int, threads: int, runs: int) -> tuple[dict[str, float], float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(3):
            sess.run(None, {name: x})
        import time
        t0 = time.perf_counter()
        for _ in range(runs):
            sess.run(None, {name: x})
        wall = (time.perf_counter() - t0) * 1e3 / runs
        events = json.loads(pathlib.Path(sess.end_profiling()).read_text())
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1e3)
    # The last `runs` calls of each node (the warm-up came first).
    return {n: sum(d[-runs:]) / runs for n, d in per_node.items()}, wall


def tract_profile(bundle: pathlib.Path, threads: int, runs: int) -> tuple[list[dict], float]:
    exe = ROOT / "target/release/examples/profile"
    if not exe.exists():
        subprocess.run(["cargo", "build", "-q", "--release", "-p", "clip-edge-tools", "--example", "profile"],
                       check=True, cwd=ROOT)
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([str(exe), str(bundle), "f32", str(runs), str(threads)], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL, env={**os.environ, "PROFILE_JSON": f.name})
        r = json.loads(pathlib.Path(f.name).read_text())
    return r["nodes"], r["wall_ms"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=pathlib.Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    a = p.parse_args()
    manifest = (a.bundle / "bundle.toml").read_text()
    size = int(re.search(r"^size = (\d+)", manifest, re.M).group(1))
    model = a.bundle / "image_encoder_f32.onnx"
    cls = classes(model)
    names = list(cls)
    ort_nodes, ort_wall = ort_profile(model, size, a.threads, a.runs)
    tract_nodes, tract_wall = tract_profile(a.bundle, a.threads, a.runs)
    by_class: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    for n, ms in ort_nodes.items():
        node = onnx_node_of(n, names)
        by_class[cls.get(node, "unattributed") if node else "unattributed"][1] += ms
    for r in tract_nodes:
        node = onnx_node_of(r["name"], names)
        by_class[cls.get(node, "unattributed") if node else "unattributed"][0] += r["ms"]
    rows = sorted(by_class.items(), key=lambda kv: -max(kv[1]))
    tract_total = sum(v[0] for _, v in rows)
    ort_total = sum(v[1] for _, v in rows)
    if a.json:
        print(json.dumps({"bundle": str(a.bundle), "threads": a.threads, "runs": a.runs,
                          "tract_wall_ms": tract_wall, "ort_wall_ms": ort_wall,
                          "classes": {k: {"tract_ms": v[0], "ort_ms": v[1]} for k, v in rows}}, indent=1))
        return
    print(f"{a.bundle.name}, f32, {a.threads} thread(s), {a.runs} runs; wall per run: tract {tract_wall:.2f} ms, "
          f"ONNX Runtime {ort_wall:.2f} ms ({tract_wall / ort_wall:.2f}x)")
    print("| operator class | tract ms | ORT ms | tract / ORT | gap ms | share of the gap |")
    print("|---|---|---|---|---|---|")
    gap = tract_total - ort_total
    for k, (t, o) in rows:
        if max(t, o) < 0.005 * max(tract_total, ort_total):
            continue
        ratio = f"{t / o:.2f}" if o > 0 else "-"
        share = f"{100 * (t - o) / gap:.0f}%" if gap > 0 else "-"
        print(f"| {k} | {t:.2f} | {o:.2f} | {ratio} | {t - o:+.2f} | {share} |")
    print(f"| all nodes | {tract_total:.2f} | {ort_total:.2f} | {tract_total / ort_total:.2f} | {gap:+.2f} | |")


if __name__ == "__main__":
    main()
