"""What does live shadowing cost a client? Predict p50/p99 on half_plus_two.

    .venv/bin/python bench/shadow.py [--seconds 5]

Two servers on loopback: a baseline (another onnx-serving, standing in for TF
Serving) and the front with --shadow_config_file. The front's shadow config is
rewritten between runs: off; candidate at sampling 0.1 and 1.0 (clients get ours,
the baseline is called off their path); shadow at 0.1 and 1.0 (clients get the
baseline's answer through the front, ours runs off their path). One client, one
request at a time, for --seconds per run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest_overhead import grpc_latencies
from tests.server_process import ServerProcess

MODEL = Path(__file__).resolve().parent.parent / "examples" / "models" / "half_plus_two"
RUNS = [("off", 0.0), ("candidate", 0.1), ("candidate", 1.0), ("shadow", 0.1), ("shadow", 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "models.config"
        config.write_text(f'model_config_list {{ config {{ name: "half_plus_two" '
                          f'base_path: "{MODEL}" model_platform: "onnx" }} }}')
        shadow = root / "shadow.json"
        shadow.write_text('{"models": {}}')
        baseline = ServerProcess([f"--model_config_file={config}"], root / "baseline.log").start()
        front = ServerProcess([f"--model_config_file={config}", f"--shadow_config_file={shadow}",
                               "--shadow_config_file_poll_wait_seconds=1"],
                              root / "front.log").start()
        try:
            print(f"{'mode':<10} {'sampling':>8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8}")
            for mode, rate in RUNS:
                shadow.write_text(json.dumps({"models": {"half_plus_two": {
                    "mode": mode, "address": baseline.address, "sampling_rate": rate}}}))
                time.sleep(2.5)  # two polls: the front has applied it
                grpc_latencies(front.address, 0.5)  # warm
                ms = np.array(grpc_latencies(front.address, args.seconds)) * 1000
                print(f"{mode:<10} {rate:>8g} {len(ms):>9} {np.percentile(ms, 50):>8.3f} "
                      f"{np.percentile(ms, 99):>8.3f}")
        finally:
            front.stop()
            baseline.stop()


if __name__ == "__main__":
    main()
