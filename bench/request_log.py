"""What request logging costs a request: latency at sampling 1.0 against none, one run.

    .venv/bin/python bench/request_log.py [--requests 2000] [--rows 1 10000]

One server serves half_plus_two twice: ``logged`` with a logging_config at
sampling_rate 1.0 (every request written) and ``plain`` without. One gRPC
client alternates requests between them, so both see the same machine at the
same moments; each payload size (rows of x) is a row of the table. The
request-log counters show whether the writer kept up (records dropped when its
queue is full, by design, rather than slowing requests).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import requests

from onnx_serving.client import Client

MODEL = Path(__file__).resolve().parent.parent / "examples" / "models" / "half_plus_two"


def serve(folder: Path, port: int, rest_port: int) -> subprocess.Popen[bytes]:
    config = folder / "models.config"
    config.write_text(f"""model_config_list {{
      config {{
        name: "logged" base_path: "{MODEL}"
        logging_config {{
          log_collector_config {{ filename_prefix: "{folder / 'logs' / 'logged'}" }}
          sampling_config {{ sampling_rate: 1.0 }}
        }}
      }}
      config {{ name: "plain" base_path: "{MODEL}" }}
    }}""")
    monitoring = folder / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    server = subprocess.Popen(
        [sys.executable, "-m", "onnx_serving.server", "serve", f"--port={port}",
         f"--rest_api_port={rest_port}", f"--model_config_file={config}",
         f"--monitoring_config_file={monitoring}"],
        stderr=subprocess.DEVNULL,
    )
    grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=60)
    return server


def alternate(address: str, rows: int, count: int) -> dict[str, list[float]]:
    x = np.linspace(0, 1, rows, dtype=np.float32).reshape(rows, 1)
    times: dict[str, list[float]] = {"plain": [], "logged": []}
    with Client(address) as client:
        for model in times:  # warm both
            for _ in range(20):
                client.predict(model, {"x": x})
        for i in range(count):
            for model in (("plain", "logged") if i % 2 else ("logged", "plain")):
                start = time.perf_counter()
                client.predict(model, {"x": x})
                times[model].append(time.perf_counter() - start)
    return times


def counters(rest_port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics",
                        timeout=10).text
    return {outcome: float(value) for outcome, value in re.findall(
        r':onnx_serving:request_log_records\{model_name="logged",outcome="(\w+)"\} (\S+)', text
    )}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per model and payload")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 10000])
    args = parser.parse_args()
    port, rest_port = 18630, 18631
    with tempfile.TemporaryDirectory() as folder:
        server = serve(Path(folder), port, rest_port)
        try:
            print("| rows | plain p50 ms | logged p50 ms | plain p99 ms | logged p99 ms "
                  "| mean ratio |\n| --- | --- | --- | --- | --- | --- |")
            for rows in args.rows:
                times = alternate(f"127.0.0.1:{port}", rows, args.requests)
                plain, logged = (np.array(times[m]) * 1000 for m in ("plain", "logged"))
                print(f"| {rows} | {np.percentile(plain, 50):.3f} | "
                      f"{np.percentile(logged, 50):.3f} | {np.percentile(plain, 99):.3f} | "
                      f"{np.percentile(logged, 99):.3f} | {logged.mean() / plain.mean():.2f} |")
            time.sleep(1.0)  # let the writer finish
            print(f"\nrequest log records: {counters(rest_port)}")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
