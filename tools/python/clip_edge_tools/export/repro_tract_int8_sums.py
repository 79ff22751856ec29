"""Minimal reproduction for upstream tract: a dynamic-int8 matrix product with
constant weights runs slower than the same product in f32, although tract's
int8 kernels are faster, because the zero-point correction re-sums the
constant weights on every run instead of once at load.

The graph is the smallest "image encoder" clip-edge can load: a 1x3x64x64
input, flattened, times a constant 12288 x D weight. The script writes it in
f32 and as ONNX Runtime's dynamic int8 (MatMulInteger), wraps both in a
bundle, and times them with `clip-edge bench` (tract) and ONNX Runtime.

  .venv/bin/python tools/python/repro_tract_int8_sums.py [--dim 1024] [--out /tmp/repro]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np

from ..binary import ClipEdge
from ..manifest import Preprocess
from ..paths import ROOT
from .bundle import write_bundle
from .quantise import quantise_int8_dynamic


def build(path: pathlib.Path, dim: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((3 * 64 * 64, dim)).astype(np.float32) / 64
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["embedding"])],
        "repro", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, dim])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="repro_tract_int8_sums.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--out", default="/tmp/clip-edge-repro")
    p.add_argument("--frames", type=int, default=50)
    a = p.parse_args(argv)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    f32, dyn = out / "matmul_f32.onnx", out / "matmul_int8_dynamic.onnx"
    build(f32, a.dim)
    quantise_int8_dynamic(f32, dyn)
    bundle = write_bundle(out / "bundle", name="repro", description="tract int8 repro",
                          encoders={"f32": f32, "int8": dyn},
                          preprocess=Preprocess(size=64, resize="squash", interpolation="bilinear",
                                                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
                          embed_dim=a.dim, logit_scale=100.0, text=None, force=True)
    binary = ClipEdge.locate()
    store = out / "random.store"
    binary.prompts_random(bundle, store)
    image = ROOT / "models" / "emoji" / "samples" / "dog-google.png"
    print(f"1x12288 x 12288x{a.dim} matrix product, one thread, {a.frames} frames, medians")
    for precision, file in (("f32", f32), ("int8", dyn)):
        t = binary.bench(bundle, image, prompts=store, precision=precision, frames=a.frames)
        o = json.loads(subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "ort_bench.py"), "--model",
                                       str(file), "--size", "64", "--frames", str(a.frames)],
                                      check=True, capture_output=True, text=True).stdout)
        print(f"{precision:>5}: tract {t['infer_ms_median']:.3f} ms (load+optimise {t['load_ms']['total']:.0f} ms), "
              f"ONNX Runtime {o['infer_ms_median']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
