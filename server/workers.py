"""--num_workers: several server processes sharing the ports, for machines with many cores.

One Python process serves requests on one GIL: decoding, encoding and gRPC's own
Python work run one at a time, however many cores ONNX Runtime may use. N worker
processes bound to the same ports with SO_REUSEPORT let the kernel spread
connections over N GILs. Each worker loads every model (memory x N) and polls the
repository itself. This process only starts them, relays SIGTERM/SIGINT, and
stops them all when one fails.

The workers share one private folder (``WORKERS_DIR_ENV``): prometheus-client's
multiprocess files, so any worker's scrape shows the whole server, and the model
config a HandleReloadConfigRequest set, so a reload reaches every worker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from onnx_serving.server.config import ModelConfig, read_config_file, to_text
from onnx_serving.server.errors import Code, ServingError
from onnx_serving.server.metrics import MULTIPROCESS_DIR_ENV

if TYPE_CHECKING:
    from onnx_serving.server.api.grpc.model_service import Reload

log = logging.getLogger(__name__)

WORKERS_DIR_ENV = "ONNX_SERVING_WORKERS_DIR"
WORKERS_COUNT_ENV = "ONNX_SERVING_NUM_WORKERS"
_CONFIG_FILE = "reloaded.config"
_ACK_PREFIX = "applied."
_WATCH_SECONDS = 0.2


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The same flags, as one worker of many."""
    own = [a for a in argv if not a.lstrip("-").startswith(("num_workers", "reuse_port"))]
    return [*own, "--num_workers=1", "--reuse_port=true"]


def run_workers(argv: Sequence[str], count: int) -> int:
    from prometheus_client import multiprocess

    shared = Path(tempfile.mkdtemp(prefix="onnx-serving-workers-"))
    metrics_dir = shared / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, WORKERS_DIR_ENV: str(shared), WORKERS_COUNT_ENV: str(count),
           MULTIPROCESS_DIR_ENV: str(metrics_dir)}
    command = [sys.executable, "-m", "onnx_serving.server", "serve", *worker_argv(argv)]
    workers = [subprocess.Popen(command, env=env) for _ in range(count)]
    log.info("Started %d worker processes: %s", count, [w.pid for w in workers])

    def relay(signum: int, _frame: FrameType | None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, relay)
    signal.signal(signal.SIGINT, relay)
    try:
        while all(w.poll() is None for w in workers):
            time.sleep(0.2)
        failed = [w for w in workers if w.returncode]
        if failed:
            log.error("Worker %d exited with status %d; stopping the others",
                      failed[0].pid, failed[0].returncode)
        relay(signal.SIGTERM, None)
        for worker in workers:
            worker.wait()
            multiprocess.mark_process_dead(worker.pid, str(metrics_dir))
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    return max((w.returncode for w in workers), default=0)


class Peers:
    """A worker's view of the others: reloads go to all of them.

    The worker asked applies the config itself (a refused reload changes nothing and
    goes no further), then publishes it in the shared folder and waits until every
    worker has applied it (a worker that refuses it keeps its config and says why);
    each worker watches that file and applies what it finds, also when it starts
    after the reload. Config file polling needs none of this: each worker polls.
    """

    def __init__(self, directory: Path, workers: int, apply: Reload) -> None:
        self._config = directory / _CONFIG_FILE
        self._directory = directory
        self._workers = workers
        self._apply = apply
        self._lock = threading.Lock()  # one apply at a time in this worker
        self._applied = ""

    @classmethod
    def from_environment(cls, apply: Reload) -> Peers | None:
        directory = os.environ.get(WORKERS_DIR_ENV)
        if not directory:
            return None
        return cls(Path(directory), int(os.environ.get(WORKERS_COUNT_ENV, "1")), apply)

    def start(self, stop: threading.Event) -> None:
        threading.Thread(target=self._watch, args=(stop,), name="worker-peers",
                         daemon=True).start()

    def reload(self, configs: list[ModelConfig], *, timeout: float | None = None) -> None:
        """HandleReloadConfigRequest: here first, then in every other worker."""
        deadline = None if timeout is None else time.monotonic() + timeout
        text = to_text(configs)
        digest = _digest(text)
        with self._lock:
            self._apply(configs, timeout=timeout)  # refused: nothing changed, nothing to share
            self._acknowledge(digest, "")
            temporary = self._config.with_suffix(f".{os.getpid()}")
            temporary.write_text(text)
            temporary.replace(self._config)
            self._applied = digest
        self._wait_for_peers(digest, deadline)

    def _wait_for_peers(self, digest: str, deadline: float | None) -> None:
        while True:
            acks = [path.read_text().partition("\n") for path in
                    self._directory.glob(f"{_ACK_PREFIX}*")]
            done = [error for seen, _, error in acks if seen == digest]
            if len(done) >= self._workers:
                errors = [error for error in done if error]
                if errors:
                    raise ServingError(f"A worker could not apply the config: {errors[0]}",
                                       Code.UNKNOWN)
                return
            if deadline is not None and time.monotonic() > deadline:
                raise ServingError(
                    f"{len(done)} of {self._workers} workers applied the config in time; "
                    "the others are still loading it", Code.DEADLINE_EXCEEDED)
            time.sleep(_WATCH_SECONDS / 4)

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(_WATCH_SECONDS):
            try:
                text = self._config.read_text()
            except FileNotFoundError:
                continue
            digest = _digest(text)
            if digest == self._applied:
                continue
            with self._lock:
                if digest == self._applied:
                    continue
                log.info("Another worker reloaded the model config; applying it here")
                try:
                    self._apply(read_config_file(self._config))
                    self._acknowledge(digest, "")
                except ServingError as exc:
                    log.error("Applying the reloaded model config: %s", exc.message)
                    self._acknowledge(digest, exc.message)
                self._applied = digest

    def _acknowledge(self, digest: str, error: str) -> None:
        ack = self._directory / f"{_ACK_PREFIX}{os.getpid()}"
        temporary = ack.with_name(f".{ack.name}")
        temporary.write_text(f"{digest}\n{error}")
        temporary.replace(ack)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
