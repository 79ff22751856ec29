#!/usr/bin/env python3
"""ONNX Runtime side of tools/bench/compare.sh: cold start (session creation +
first run), per-frame inference median and p95 over --frames runs after a
warm-up, and peak RSS of this process, for one image-encoder ONNX file at a
fixed 1x3xSxS input. Prints one JSON object.

  .venv/bin/python tools/bench/ort_bench.py --model FILE --size 224 --threads 1 --frames 50
"""
import argparse
import json
import resource
import statistics
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, a.size, a.size)).astype(np.float32)
    t0 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: x})
    cold = (time.perf_counter() - t0) * 1e3
    for _ in range(a.warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(a.frames):
        t = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(json.dumps({
        "engine": "onnxruntime", "version": ort.__version__, "threads": a.threads, "frames": a.frames,
        "cold_start_ms": round(cold, 3), "infer_ms_median": round(statistics.median(times), 3),
        "infer_ms_p95": round(times[min(len(times) - 1, int(0.95 * len(times)))], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
