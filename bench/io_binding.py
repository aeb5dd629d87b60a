"""IO binding against plain run(), on the sessions the server builds.

    .venv/bin/python bench/io_binding.py [--runs 2000]

CPU models where the call, not the compute, is most of the cost: one element, an
image and a batch of 8 images through one Mul (the output as large as the input),
and a MatMul stack where compute dominates. Each goes through the server's
session as a request does (``lease``): with IO binding on, the binding and the
output buffers are kept from one call to the next. On CUDA, binding is also where
inputs are copied to the device once and outputs straight back to host memory.
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


def mul_model(shape: list[int]) -> tuple[onnx.ModelProto, np.ndarray]:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])], "mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", *shape[1:]])],
        initializer=[numpy_helper.from_array(np.array(2.0, np.float32), "k")],
    )
    return _model(graph), np.ones(shape, np.float32)


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
        with session.lease({"x": x}, ["y"], ["y"]):
            pass
    started = time.perf_counter()
    for _ in range(runs):
        with session.lease({"x": x}, ["y"], ["y"]):
            pass
    return (time.perf_counter() - started) / runs * 1e6


MODELS = {
    "1 element": lambda: mul_model([1, 1]),
    "image 224x224x3": lambda: mul_model([1, 224, 224, 3]),
    "8 images": lambda: mul_model([8, 224, 224, 3]),
    "4 MatMuls 8x256": matmul_model,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print("| model | run() µs | IO binding µs | binding / run |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make) in enumerate(MODELS.items()):
            model, x = make()
            path = Path(tmp) / f"{i}.onnx"
            onnx.save(model, path)
            graph = read_graph(path)
            plain = OnnxSession(path, graph, RuntimeConfig(intra_op_threads=1))
            bound = OnnxSession(path, graph, RuntimeConfig(intra_op_threads=1, io_binding=True))
            # Alternate, and keep each one's best round: noise only ever adds time.
            a, b = [], []
            for _ in range(args.rounds):
                a.append(per_call_us(plain, x, args.runs))
                b.append(per_call_us(bound, x, args.runs))
            print(f"| {name} | {min(a):.1f} | {min(b):.1f} | {min(b) / min(a):.2f}x |")


if __name__ == "__main__":
    main()
