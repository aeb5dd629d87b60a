"""Do concurrent Predicts run concurrently? Throughput at 1 and N clients.

    .venv/bin/python bench/concurrency.py [--seconds 5] [--clients 2] [--workers 1]
        [--model matmul|tiny]

``matmul`` (default) is a MatMul-heavy model with one intra-op thread per request,
so any speed-up from more clients comes from requests running side by side (ONNX
Runtime releases the GIL while it runs); on an N-core machine the ideal ratio is
about N. ``tiny`` (y = x + 1) is all Python overhead: there ``--workers`` (server
processes sharing the port) is what can lift the ceiling of one GIL.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnx_serving.client import Client

SIZE = 512


def write_tiny(base: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", SIZE])],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (base / "1").mkdir(parents=True)
    onnx.save(model, base / "1" / "model.onnx")


def write_model(base: Path) -> None:
    weights = np.random.default_rng(0).standard_normal((SIZE, SIZE)).astype(np.float32)
    nodes, previous = [], "x"
    for i in range(8):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"h{i}"]))
        previous = f"h{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(
        nodes, "matmuls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", SIZE])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (base / "1").mkdir(parents=True)
    onnx.save(model, base / "1" / "model.onnx")


def throughput(address: str, clients: int, seconds: float, rows: int = 64) -> float:
    x = np.ones((rows, SIZE), np.float32)
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        with Client(address) as client:
            while time.monotonic() < stop:
                client.predict("m", {"x": x})
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--port", type=int, default=18599)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", choices=["matmul", "tiny"], default="matmul")
    args = parser.parse_args()
    rows = 64 if args.model == "matmul" else 1
    with tempfile.TemporaryDirectory() as tmp:
        (write_model if args.model == "matmul" else write_tiny)(Path(tmp) / "m")
        server = subprocess.Popen([
            sys.executable, "-m", "onnx_serving.server", "serve", f"--port={args.port}",
            "--model_name=m", f"--model_base_path={tmp}/m",
            "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
            f"--num_workers={args.workers}",
        ], stderr=subprocess.DEVNULL)
        address = f"127.0.0.1:{args.port}"
        try:
            grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=60)
            time.sleep(2 if args.workers > 1 else 0)  # every worker up, not just the first
            throughput(address, 1, 1.0, rows)  # warm up
            one = throughput(address, 1, args.seconds, rows)
            many = throughput(address, args.clients, args.seconds, rows)
        finally:
            server.terminate()
            server.wait()
    print(f"| clients | requests/s |\n| --- | --- |\n| 1 | {one:.1f} |\n"
          f"| {args.clients} | {many:.1f} |\nratio {many / one:.2f}x")


if __name__ == "__main__":
    main()
