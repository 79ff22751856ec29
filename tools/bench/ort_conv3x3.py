#!/usr/bin/env python3
"""ONNX Runtime's side of tools/examples/repro_conv3x3.rs: the same 3x3
convolutions (NCHW, f32, pad 1, bias, the same weights), median of 200 runs
after 5 warm-up runs, in the same table form, on 1 thread or THREADS.

  .venv/bin/python tools/bench/ort_conv3x3.py [THREADS]
"""
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# (output channels, input channels, input plane side, stride): the example's CASES.
CASES = [(24, 3, 64, 1), (48, 24, 64, 2), (48, 48, 32, 1), (96, 48, 32, 2), (96, 96, 16, 1),
         (192, 96, 16, 2), (192, 192, 8, 1), (320, 192, 8, 2), (320, 320, 4, 1)]


def weights(n: int) -> np.ndarray:
    return ((np.arange(n) % 13 - 6.0) / 64.0).astype(np.float32)


def session(co: int, ci: int, side: int, stride: int, threads: int) -> ort.InferenceSession:
    kernel = weights(co * ci * 9).reshape(co, ci, 3, 3)
    bias = np.full(co, 0.5, np.float32)
    node = helper.make_node("Conv", ["x", "kernel", "bias"], ["y"], kernel_shape=[3, 3],
                            strides=[stride, stride], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "conv3x3",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    runs = 200
    print(f"3x3 convolution (NCHW f32, pad 1), ONNX Runtime {ort.__version__}, {threads} thread(s), "
          f"median of {runs} runs")
    print("| co | ci | plane | stride | m x k x n | ORT ms | ORT GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for co, ci, side, stride in CASES:
        s = session(co, ci, side, stride, threads)
        x = weights(ci * side * side).reshape(1, ci, side, side)
        times = []
        for _ in range(runs + 5):
            t = time.perf_counter()
            s.run(None, {"x": x})
            times.append((time.perf_counter() - t) * 1e3)
        ms = statistics.median(times[5:])
        total += ms
        out = -(-side // stride)
        m, k, n = co, ci * 9, out * out
        print(f"| {co} | {ci} | {side} | {stride} | {m}x{k}x{n} | {ms:.3f} | {2.0 * m * k * n / ms / 1e6:.1f} |")
    print(f"| all | | | | | {total:.3f} | |")


if __name__ == "__main__":
    main()
