"""--num_workers: several server processes sharing the ports, for machines with many cores.

One Python process serves requests on one GIL: decoding, encoding and gRPC's own
Python work run one at a time, however many cores ONNX Runtime may use. N worker
processes bound to the same ports with SO_REUSEPORT let the kernel spread
connections over N GILs. Each worker loads every model (memory x N) and polls the
repository itself. This process only starts them, relays SIGTERM/SIGINT, and
stops them all when one fails.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger(__name__)


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The same flags, as one worker of many."""
    own = [a for a in argv if not a.lstrip("-").startswith(("num_workers", "reuse_port"))]
    return [*own, "--num_workers=1", "--reuse_port=true"]


def run_workers(argv: Sequence[str], count: int) -> int:
    command = [sys.executable, "-m", "onnx_serving.server", "serve", *worker_argv(argv)]
    workers = [subprocess.Popen(command) for _ in range(count)]
    log.info("Started %d worker processes: %s", count, [w.pid for w in workers])

    def relay(signum: int, _frame: FrameType | None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    while all(w.poll() is None for w in workers):
        time.sleep(0.2)
    failed = [w for w in workers if w.returncode]
    if failed:
        log.error("Worker %d exited with status %d; stopping the others",
                  failed[0].pid, failed[0].returncode)
    relay(signal.SIGTERM, None)
    for worker in workers:
        worker.wait()
    return max((w.returncode for w in workers), default=0)
