"""--num_workers=1 vs 2, side by side in one run: throughput and the servers' memory.

    .venv/bin/python -m bench.workers [--seconds 5] [--rounds 2] [--clients 4]

Clients are processes (one GIL each, one channel each, so the kernel spreads their
connections over the workers). Two models: ``tiny`` (y = x + 1 on one row: all
per-request Python work, where one GIL is the ceiling) and ``matmul`` (8 MatMuls of
64x512 by 512x512 per request, one intra-op thread: mostly ONNX Runtime, which releases
the GIL). Memory is the resident set of every server process (the parent included),
read from /proc once the servers are warm. The configurations alternate in each round,
so both see the same machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.concurrency import SIZE, write_model, write_tiny
from onnx_serving.client import Client
from tests.server_process import ServerProcess, free_port

ROWS = {"tiny": 1, "matmul": 64}


def _client(address: str, model: str, rows: int, stop: float, out: multiprocessing.Queue) -> None:
    x = np.ones((rows, SIZE), np.float32)
    done = 0
    with Client(address) as client:
        client.predict(model, {"x": x})
        while time.monotonic() < stop:
            client.predict(model, {"x": x})
            done += 1
    out.put(done)


def throughput(address: str, model: str, clients: int, seconds: float) -> float:
    out: multiprocessing.Queue = multiprocessing.Queue()
    stop = time.monotonic() + seconds + 1.0  # each client's first call (connect) is untimed
    procs = [multiprocessing.Process(target=_client, args=(address, model, ROWS[model], stop, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def resident_mib(pid: int) -> float:
    """The RSS of ``pid`` and its children, in MiB."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    pids = [pid, *map(int, children.stdout.split())]
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny(root / "tiny")
        write_model(root / "matmul")
        config = root / "models.config"
        config.write_text("model_config_list { " + " ".join(
            f'config {{ name: "{m}" base_path: "{root / m}" model_platform: "onnx" }}'
            for m in ROWS) + " }")
        servers = {
            workers: ServerProcess(
                [f"--model_config_file={config}", f"--num_workers={workers}",
                 "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1"],
                root / f"server{workers}.log", port=free_port(),
            ).start()
            for workers in (1, 2)
        }
        try:
            time.sleep(3)  # the second worker may open its port after the first
            results: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.rounds):
                for model in ROWS:
                    for workers, server in servers.items():
                        rate = throughput(server.address, model, args.clients, args.seconds)
                        results.setdefault((model, workers), []).append(rate)
            memory = {w: resident_mib(s.process.pid) for w, s in servers.items()
                      if s.process is not None}
        finally:
            for server in servers.values():
                server.stop()
    print(f"{args.clients} client processes, {args.rounds} rounds of {args.seconds:.0f} s, "
          f"{multiprocessing.cpu_count()} cores")
    print("| model | 1 worker (req/s) | 2 workers (req/s) | ratio |\n| --- | --- | --- | --- |")
    for model in ROWS:
        one = max(results[(model, 1)])
        two = max(results[(model, 2)])
        print(f"| {model} | {one:.0f} | {two:.0f} | {two / one:.2f}x |")
    print(f"resident memory, all server processes: 1 worker {memory[1]:.0f} MiB, "
          f"2 workers {memory[2]:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
