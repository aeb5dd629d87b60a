"""Does the REST API slow the gRPC path? gRPC latency with REST off, on and busy.

    .venv/bin/python bench/rest_overhead.py [--seconds 5]

Three runs on half_plus_two, one gRPC client each: a server without
--rest_api_port; the same with REST on but idle; and with one REST client
posting the same prediction in a loop beside the gRPC one. Also prints the
REST client's own latency for the same request.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import requests

from onnx_serving.client import Client

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "models.config"


def grpc_latencies(address: str, seconds: float) -> list[float]:
    x = np.array([[2.0]], np.float32)
    out = []
    with Client(address) as client:
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            start = time.perf_counter()
            client.predict("half_plus_two", {"x": x})
            out.append(time.perf_counter() - start)
    return out


def rest_loop(url: str, stop: threading.Event, out: list[float]) -> None:
    with requests.Session() as session:
        while not stop.is_set():
            start = time.perf_counter()
            session.post(url, json={"instances": [[2.0]]}, timeout=30).raise_for_status()
            out.append(time.perf_counter() - start)


def summary(values: list[float]) -> str:
    ms = np.array(values) * 1000
    return f"{np.percentile(ms, 50):.3f} | {np.percentile(ms, 99):.3f} | {len(ms)}"


def serve(port: int, rest_port: int | None) -> subprocess.Popen[bytes]:
    flags = [f"--port={port}", f"--model_config_file={CONFIG}"]
    if rest_port:
        flags.append(f"--rest_api_port={rest_port}")
    server = subprocess.Popen([sys.executable, "-m", "onnx_serving.server", "serve", *flags],
                              stderr=subprocess.DEVNULL)
    grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=60)
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    port, rest_port = 18620, 18621
    address = f"127.0.0.1:{port}"
    rows = []
    server = serve(port, None)
    try:
        grpc_latencies(address, 1.0)
        rows.append(("gRPC, REST off", summary(grpc_latencies(address, args.seconds))))
    finally:
        server.terminate()
        server.wait()
    server = serve(port, rest_port)
    try:
        grpc_latencies(address, 1.0)
        rows.append(("gRPC, REST on and idle", summary(grpc_latencies(address, args.seconds))))
        stop, rest = threading.Event(), []
        url = f"http://127.0.0.1:{rest_port}/v1/models/half_plus_two:predict"
        worker = threading.Thread(target=rest_loop, args=(url, stop, rest))
        worker.start()
        busy = grpc_latencies(address, args.seconds)
        stop.set()
        worker.join()
        rows.append(("gRPC, one REST client busy beside it", summary(busy)))
        rows.append(("REST (that client)", summary(rest)))
    finally:
        server.terminate()
        server.wait()
    print("| run | p50 ms | p99 ms | requests |\n| --- | --- | --- | --- |")
    for name, figures in rows:
        print(f"| {name} | {figures} |")


if __name__ == "__main__":
    main()
