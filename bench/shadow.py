"""What does live shadowing cost? Client p50/p99 and server CPU per request.

    .venv/bin/python bench/shadow.py [--seconds 4] [--models half_plus_two,mobilenet_v2]

Per model (bench/suite/models.py's cached builds), two servers on loopback: a
baseline (another onnx-serving, standing in for TF Serving) and the front with
--shadow_config_file, rewritten between runs: off; candidate at sampling 0.1 and
1.0 (clients get ours, the baseline is called off their path); shadow at 0.1 and
1.0 (clients get the baseline's answer through the front, ours runs off their
path); and candidate at 1.0 against a baseline that hangs (a socket that accepts
and never answers) and one that is dead (nothing listens), whose p99 the target
wants within 1.2x of off. One client, one raw Predict at a time (bytes built
once), for --seconds per run. CPU is each server's process tree, per request.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.suite import models
from bench.suite.probes import tree_cpu_seconds
from onnx_serving.codec.tensors import make_tensor_proto
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2
from tests.server_process import ServerProcess, free_port

PREDICT = "/tensorflow.serving.PredictionService/Predict"


@dataclass(frozen=True)
class Run:
    mode: str
    sampling: float
    baseline: str = "live"  # live | hung | dead


RUNS = [Run("off", 0.0), Run("candidate", 0.1), Run("candidate", 1.0), Run("shadow", 0.1),
        Run("shadow", 1.0), Run("candidate", 1.0, "hung"), Run("candidate", 1.0, "dead")]


def hung_baseline() -> tuple[socket.socket, str]:
    """Accepts connections and never answers a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(iter(lambda: listener.accept()[0], None)),
                     daemon=True).start()
    return listener, f"127.0.0.1:{listener.getsockname()[1]}"


def pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def measure(front: ServerProcess, baseline: ServerProcess, request: bytes,
            seconds: float) -> tuple[np.ndarray, float, float]:
    """Latencies (ms), then front and baseline CPU ms per request."""
    with front.channel() as channel:
        call = channel.unary_unary(PREDICT)
        stop = time.perf_counter() + 0.5
        while time.perf_counter() < stop:  # warm
            call(request, timeout=30)
        cpu = tree_cpu_seconds(pid(front)), tree_cpu_seconds(pid(baseline))
        latencies = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            start = time.perf_counter()
            call(request, timeout=30)
            latencies.append(time.perf_counter() - start)
        time.sleep(0.3)  # the last comparisons finish on the front's threads
        n = len(latencies)
        return (np.array(latencies) * 1000,
                (tree_cpu_seconds(pid(front)) - cpu[0]) / n * 1000,
                (tree_cpu_seconds(pid(baseline)) - cpu[1]) / n * 1000)


def bench_model(name: str, seconds: float, root: Path, hung: str) -> None:
    model = models.ensure(name)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for alias, array in model.sample(1).items():
        request.inputs[alias].CopyFrom(make_tensor_proto(array, tensor_content=True))
    raw = request.SerializeToString()
    config = root / f"{name}.config"
    config.write_text(f'model_config_list {{ config {{ name: "{name}" '
                      f'base_path: "{model.onnx_base}" model_platform: "onnx" }} }}')
    shadow = root / f"{name}-shadow.json"
    shadow.write_text('{"models": {}}')
    baseline = ServerProcess([f"--model_config_file={config}"],
                             root / f"{name}-baseline.log").start()
    front = ServerProcess([f"--model_config_file={config}", f"--shadow_config_file={shadow}",
                           "--shadow_config_file_poll_wait_seconds=1"],
                          root / f"{name}-front.log").start()
    addresses = {"live": baseline.address, "hung": hung, "dead": f"127.0.0.1:{free_port()}"}
    try:
        off_p99 = 0.0
        for run in RUNS:
            entry = {"mode": run.mode, "address": addresses[run.baseline],
                     "sampling_rate": run.sampling}
            shadow.write_text(json.dumps({"models": {name: entry} if run.mode != "off" else {}}))
            time.sleep(2.2)  # two polls: the front has applied it
            ms, front_cpu, baseline_cpu = measure(front, baseline, raw, seconds)
            p50, p99 = np.percentile(ms, [50, 99])
            off_p99 = off_p99 or p99
            sampling = "—" if run.mode == "off" else f"{run.sampling:g}"
            print(f"| {name} | {run.mode} | {sampling} | {run.baseline} | {len(ms)} | {p50:.2f} "
                  f"| {p99:.2f} | {p99 / off_p99:.2f} | {front_cpu:.2f} | {baseline_cpu:.2f} |",
                  flush=True)
    finally:
        front.stop()
        baseline.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--models", default="half_plus_two,mobilenet_v2")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average at start: {' '.join(load)}")
    print("| model | mode | sampling | baseline | requests | p50 ms | p99 ms | p99 / off "
          "| front CPU ms/req | baseline CPU ms/req |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    listener, hung = hung_baseline()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in args.models.split(","):
                bench_model(name, args.seconds, Path(tmp), hung)
        finally:
            listener.close()
    print(f"load average at end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
