"""IO binding against plain run(), on the sessions the server builds.

    .venv/bin/python bench/io_binding.py [--runs 2000]

Two CPU models: a cheap one on a 224x224x3 image (transfer dominates) and a MatMul
stack (compute dominates). On CPU, binding saves no device copy, so any gain is
the per-call overhead of the Python API; on CUDA it is where inputs are copied to
the device once and outputs straight back to host memory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.graph import read_graph
from onnx_serving.server.runtime.session import OnnxSession


def image_model() -> tuple[onnx.ModelProto, np.ndarray]:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])], "image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 224, 224, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 224, 224, 3])],
        initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "k")],
    )
    return _model(graph), np.ones((1, 224, 224, 3), np.float32)


def matmul_model() -> tuple[onnx.ModelProto, np.ndarray]:
    w = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    nodes, previous = [], "x"
    for i in range(4):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"h{i}"]))
        previous = f"h{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes, "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 256])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _model(graph), np.ones((8, 256), np.float32)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def per_call_us(session: OnnxSession, x: np.ndarray, runs: int) -> float:
    for _ in range(50):
        session.run({"x": x}, ["y"])
    started = time.perf_counter()
    for _ in range(runs):
        session.run({"x": x}, ["y"])
    return (time.perf_counter() - started) / runs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    print("| model | run() µs | IO binding µs | binding / run |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, x) in (("image 224x224x3 x2", image_model()),
                                 ("4 MatMuls 8x256", matmul_model())):
            path = Path(tmp) / f"{name.split()[0]}.onnx"
            onnx.save(model, path)
            graph = read_graph(path)
            plain = OnnxSession(path, graph, RuntimeConfig(intra_op_threads=1))
            bound = OnnxSession(path, graph, RuntimeConfig(intra_op_threads=1, io_binding=True))
            # Alternate, so noise falls on both alike.
            a = b = 0.0
            for _ in range(3):
                a += per_call_us(plain, x, args.runs)
                b += per_call_us(bound, x, args.runs)
            print(f"| {name} | {a / 3:.1f} | {b / 3:.1f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
