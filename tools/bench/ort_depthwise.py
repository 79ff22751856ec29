#!/usr/bin/env python3
"""ONNX Runtime's side of tools/examples/repro_depthwise.rs: the same depthwise
convolutions (group == C, NCHW, f32, SAME_UPPER padding, bias), one thread,
median of 50 runs after 3 warm-up runs, in the same table form.

  .venv/bin/python tools/bench/ort_depthwise.py
"""
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# (channels, plane side, kernel side, stride): the example's CASES.
CASES = [(256, 64, 3, 1), (256, 32, 3, 1), (512, 16, 3, 1), (1024, 8, 3, 1),
         (256, 64, 3, 2), (512, 32, 3, 2), (672, 14, 5, 1), (1152, 7, 5, 1)]


def session(c: int, side: int, k: int, stride: int) -> ort.InferenceSession:
    kernel = ((np.arange(c * k * k) % 13 - 6.0) / 16.0).astype(np.float32).reshape(c, 1, k, k)
    bias = np.full(c, 0.5, np.float32)
    node = helper.make_node("Conv", ["x", "kernel", "bias"], ["y"], group=c, kernel_shape=[k, k],
                            strides=[stride, stride], auto_pad="SAME_UPPER")
    graph = helper.make_graph([node], "depthwise",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(bias, "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def main() -> None:
    runs = 50
    print(f"depthwise conv, NCHW f32, SAME padding, ONNX Runtime {ort.__version__}, one thread, median of {runs} runs")
    print("| C | plane | kernel | stride | ORT ms | ORT GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for c, side, k, stride in CASES:
        s = session(c, side, k, stride)
        x = ((np.arange(c * side * side) % 7) / 7.0).astype(np.float32).reshape(1, c, side, side)
        times = []
        for _ in range(runs + 3):
            t = time.perf_counter()
            s.run(None, {"x": x})
            times.append((time.perf_counter() - t) * 1e3)
        ms = statistics.median(times[3:])
        out = -(-side // stride)
        gflop = 2.0 * c * out * out * k * k / 1e9
        print(f"| {c} | {side}x{side} | {k}x{k} | {stride} | {ms:.3f} | {gflop / ms * 1e3:.1f} |")


if __name__ == "__main__":
    main()
