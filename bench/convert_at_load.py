"""A SavedModel converted at load: how long, and the memory of the server and of the child.

    .venv/bin/python bench/convert_at_load.py [--model mobilenet_v2]

Exports Keras MobileNetV2 (``weights=None``, 224x224: nothing is downloaded) as a
SavedModel version, starts the real server on its base path with an empty conversion
cache, samples the server's RSS every 0.2 s until the version is AVAILABLE, and prints
the conversion's seconds and the child's peak memory (from the server's log line), the
server's RSS before and at its highest while converting, and the time to AVAILABLE.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnx_serving.client import Client
from tests.server_process import ServerProcess


def export(path: Path) -> None:
    import keras

    keras.applications.MobileNetV2(weights=None).export(str(path), verbose=False)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    root = Path(tempfile.mkdtemp(prefix="convert-at-load-"))
    export(root / "m" / "1")
    server = ServerProcess(["--model_name=m", f"--model_base_path={root / 'm'}",
                            f"--saved_model_cache_dir={root / 'cache'}"], root / "server.log")
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:  # the server's RSS from its start (``start`` waits for the load)
        while server.process is None:
            time.sleep(0.01)
        while not done.is_set():
            try:
                samples.append(rss_mb(server.process.pid))
            except OSError:
                return
            time.sleep(0.2)

    thread = threading.Thread(target=sample)
    thread.start()
    started = time.monotonic()
    server.start(timeout=1800)
    available = time.monotonic() - started
    done.set()
    thread.join()
    with Client(server.address) as client:
        state = client.status("m")[0].state
    logs = server.logs()
    server.stop()
    match = re.search(r"to ONNX in ([\d.]+) s .*peak memory (\d+) MB", logs)
    print(f"state {state}; available after {available:.1f} s")
    if match:
        print(f"conversion {match[1]} s; conversion process peak RSS {match[2]} MB")
    print(f"server RSS: first sample {samples[0]:.0f} MB, highest while converting "
          f"{max(samples):.0f} MB ({len(samples)} samples)")


if __name__ == "__main__":
    main()
