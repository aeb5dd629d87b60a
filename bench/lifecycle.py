"""Hot reload under load: latency during swaps, time to serve, memory over many cycles.

    .venv/bin/python bench/lifecycle.py [--swaps 10] [--cycles 50] [--clients 2]

Starts the real server (polling every second) over two models: ``a``, which
clients query throughout, and ``b``, a 160 MB model that is loaded and
unloaded beside it. Prints one table:

- steady p50/p99 of Predict on ``a``, with nothing loading;
- p50/p99 on ``a`` while new versions of ``a`` itself are swapped in;
- p50/p99 on ``a`` while versions of ``b`` load and unload (one model's load
  must not stall another's requests);
- seconds from a version's directory appearing (renamed into place) to the
  first answer from it;
- the server's RSS after the first and after the last of ``--cycles``
  load/unload cycles of ``b``.
"""

from __future__ import annotations

import argparse
import os
import shutil
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

ROWS = 512


def model_a(version: int) -> onnx.ModelProto:
    """y = x @ W + version, with a 1024x1024 W (4 MB): cheap to run, some work to load."""
    w = np.eye(ROWS, 1024, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "v"], ["y"])],
        "a",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", ROWS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1024])],
        initializer=[numpy_helper.from_array(w, "w"),
                     numpy_helper.from_array(np.array(version, np.float32), "v")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def model_b(seed: int) -> onnx.ModelProto:
    """40 MatMuls over 1024x1024 weights: 160 MB."""
    rng = np.random.default_rng(seed)
    nodes, inits, previous = [], [], "x"
    for i in range(40):
        inits.append(numpy_helper.from_array(rng.random((1024, 1024), np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"h{i}"]))
        previous = f"h{i}"
    graph = helper.make_graph(
        nodes, "b",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["n", 1024])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def stage(base: Path, version: int, model: onnx.ModelProto) -> Path:
    """Writes a version beside its final place; renaming it there publishes it."""
    staging = base / f".staging-{version}"
    staging.mkdir(parents=True)
    onnx.save(model, staging / "model.onnx")
    return staging


def publish(base: Path, version: int, model: onnx.ModelProto) -> None:
    os.rename(stage(base, version, model), base / str(version))


class Load:
    """Clients predicting on ``a``; each latency is stamped with its end time."""

    def __init__(self, address: str, clients: int) -> None:
        self.samples: list[tuple[float, float, int]] = []  # (end, seconds, version)
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(address,)) for _ in range(clients)
        ]

    def _run(self, address: str) -> None:
        x = np.ones((1, ROWS), np.float32)
        with Client(address) as client:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    response = client.predict_response("a", {"x": x}, timeout=30)
                except Exception:  # counted: the figure the benchmark exists to show
                    self.errors += 1
                    continue
                end = time.perf_counter()
                self.samples.append((end, end - start, response.model_spec.version.value))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def between(self, start: float, end: float) -> list[float]:
        return [s for t, s, _ in self.samples if start <= t <= end]

    def first_from(self, version: int, after: float) -> float:
        while True:
            hits = [t for t, _, v in self.samples if v == version and t >= after]
            if hits:
                return min(hits)
            time.sleep(0.01)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentiles(values: list[float]) -> str:
    if not values:
        return "n/a | n/a | 0"
    ms = np.array(values) * 1000
    return f"{np.percentile(ms, 50):.2f} | {np.percentile(ms, 99):.2f} | {len(ms)}"


def wait_versions(client: Client, name: str, want: set[int]) -> None:
    """Until exactly ``want`` is available and every other version has finished unloading."""
    while True:
        statuses = client.status(name)
        available = {s.version for s in statuses if s.state == "AVAILABLE"}
        if available == want and all(s.state in ("AVAILABLE", "END") for s in statuses):
            return
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=18610)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    publish(tmp / "a", 1, model_a(1))
    publish(tmp / "b", 1, model_b(1))
    config = tmp / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "a" base_path: "{tmp / "a"}" }} '
        f'config {{ name: "b" base_path: "{tmp / "b"}" }} }}'
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "onnx_serving.server", "serve", f"--port={args.port}",
         f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"],
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{args.port}"
    rows = []
    try:
        grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=120)
        with Client(address) as client, Load(address, args.clients) as load:
            wait_versions(client, "a", {1})
            time.sleep(1)
            start = time.perf_counter()
            time.sleep(args.steady_seconds)
            steady = load.between(start, time.perf_counter())
            rows.append(("steady, nothing loading", percentiles(steady)))

            swap_latencies, appear_to_serve = [], []
            for version in range(2, 2 + args.swaps):
                staged = stage(tmp / "a", version, model_a(version))
                appeared = time.perf_counter()
                os.rename(staged, tmp / "a" / str(version))
                served = load.first_from(version, appeared)
                appear_to_serve.append(served - appeared)
                wait_versions(client, "a", {version})
                swap_latencies += load.between(appeared, time.perf_counter())
                shutil.rmtree(tmp / "a" / str(version - 1))
            rows.append(("during swaps of a", percentiles(swap_latencies)))

            b_latencies, rss = [], []
            for cycle in range(args.cycles):
                staged = stage(tmp / "b", cycle + 2, model_b(cycle + 2))
                began = time.perf_counter()
                os.rename(staged, tmp / "b" / str(cycle + 2))
                wait_versions(client, "b", {cycle + 2})
                b_latencies += load.between(began, time.perf_counter())
                shutil.rmtree(tmp / "b" / str(cycle + 1))
                rss.append(rss_kb(server.pid))
            rows.append(("while b (160 MB) loads/unloads", percentiles(b_latencies)))
            errors = load.errors
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp)
    print("| window | p50 ms | p99 ms | requests |\n| --- | --- | --- | --- |")
    for name, figures in rows:
        print(f"| {name} | {figures} |")
    print(f"\nfailed requests: {errors}")
    print(f"appearance → first answer: median {np.median(appear_to_serve):.2f} s, "
          f"max {max(appear_to_serve):.2f} s (poll interval 1 s)")
    print(f"RSS after cycle 1: {rss[0] / 1024:.0f} MiB, after cycle {len(rss)}: "
          f"{rss[-1] / 1024:.0f} MiB ({(rss[-1] / rss[0] - 1) * 100:+.1f}%)")
    print("RSS by cycle (MiB):", " ".join(f"{r / 1024:.0f}" for r in rss))


if __name__ == "__main__":
    main()
