"""--num_workers: several server processes sharing the ports, for machines with many cores.

One Python process serves requests on one GIL: decoding, encoding and gRPC's own
Python work run one at a time, however many cores ONNX Runtime may use. N worker
processes bound to the same ports with SO_REUSEPORT let the kernel spread
connections over N GILs. Each worker loads every model (memory x N) and polls the
repository itself. This process only starts them and supervises:

- SIGTERM, SIGINT and SIGHUP stop every worker (each drains as one server does);
  the supervisor then exits with the workers' status, 0 when they stopped cleanly.
- A worker that exits on its own, or is killed (SIGKILL by the OOM killer, say), is
  not restarted: the others are stopped and the supervisor exits non-zero (the
  worker's status, or 128 + the signal's number), so the orchestrator sees a crash
  and restarts the whole server, as it would restart one process.
- Workers die with the supervisor, however it dies (SIGKILL included): on Linux each
  is started with PR_SET_PDEATHSIG, so none is left holding the ports.

The workers share one private folder (``WORKERS_DIR_ENV``): prometheus-client's
multiprocess files, so any worker's scrape shows the whole server, and the model
config a HandleReloadConfigRequest set, so a reload reaches every worker.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from onnx_serving.server.errors import Code, ConfigError, ServingError
from onnx_serving.server.flags import takes_value
from onnx_serving.server.metrics import MULTIPROCESS_DIR_ENV
from onnx_serving.server.repository.model_config import ModelConfig, read_config_file, to_text

if TYPE_CHECKING:
    from onnx_serving.server.api.grpc.model_service import Reload

log = logging.getLogger(__name__)

WORKERS_DIR_ENV = "ONNX_SERVING_WORKERS_DIR"
WORKERS_COUNT_ENV = "ONNX_SERVING_NUM_WORKERS"
_CONFIG_FILE = "reloaded.config"
_ACK_PREFIX = "applied."
_WATCH_SECONDS = 0.2
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# After SIGTERM, how long workers get to drain (--shutdown_delay_seconds and in-flight
# requests) before they are killed.
_STOP_SECONDS = 60.0


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The same flags, as one worker of many: --num_workers and --reuse_port replaced,
    written either way (``--num_workers=2`` or ``--num_workers 2``)."""
    own: list[str] = []
    args = list(argv)
    while args:
        token = args.pop(0)
        name, has_value, _ = token.lstrip("-").partition("=")
        flag = [token]
        if token.startswith("-") and not has_value and takes_value(name) and args:
            flag.append(args.pop(0))
        if name not in ("num_workers", "reuse_port"):
            own += flag
    return [*own, "--num_workers=1", "--reuse_port=true"]


def check_ports_free(ports: Sequence[int]) -> None:
    """Refuses to start workers on a port another process serves: they share theirs
    (SO_REUSEPORT), so a second server started on the same ports by mistake would
    otherwise take part of the first one's traffic without a word. A plain bind, as one
    server alone listens, fails on a port in use (SO_REUSEADDR lets a closed one's
    lingering connections be)."""
    for port in ports:
        if not port:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
                probe.listen(1)  # Linux may find the conflict only here
            except OSError as exc:
                raise ConfigError(f"Cannot listen on 0.0.0.0:{port}: "
                                  f"{exc.strerror or exc}") from exc


def run_workers(argv: Sequence[str], count: int) -> int:
    """Runs ``count`` workers until a stop signal or a worker's exit; the exit status."""
    from prometheus_client import multiprocess

    shared = Path(tempfile.mkdtemp(prefix="onnx-serving-workers-"))
    metrics_dir = shared / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, WORKERS_DIR_ENV: str(shared), WORKERS_COUNT_ENV: str(count),
           MULTIPROCESS_DIR_ENV: str(metrics_dir)}
    command = [sys.executable, "-m", "onnx_serving.server", "serve", *worker_argv(argv)]
    stop_requested = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        log.info("Received %s, stopping the workers", signal.Signals(signum).name)
        stop_requested = True
        terminate()

    workers: list[subprocess.Popen[bytes]] = []
    ended: subprocess.Popen[bytes] | None = None  # the worker whose exit stops the rest
    signalled: set[int] = set()

    def terminate() -> None:
        """SIGTERM, once, to every worker still running: each drains as it stops."""
        for worker in workers:
            if worker.pid not in signalled and worker.poll() is None:
                signalled.add(worker.pid)
                worker.send_signal(signal.SIGTERM)

    for signum in _STOP_SIGNALS:
        signal.signal(signum, stop)
    try:
        arm = _die_with_parent(os.getpid())
        workers.extend(subprocess.Popen(command, env=env, preexec_fn=arm)
                       for _ in range(count))
        log.info("Started %d worker processes: %s", count, [w.pid for w in workers])
        while not stop_requested and all(w.poll() is None for w in workers):
            time.sleep(_WATCH_SECONDS)
        ended = next((w for w in workers if w.poll() is not None), None)
        if not stop_requested and ended is not None:
            log.error("Worker %d %s; stopping the others (workers are not restarted: the "
                      "server exits for its orchestrator to restart it)",
                      ended.pid, _describe(ended.returncode))
        terminate()
        for worker in workers:
            _wait(worker)
            multiprocess.mark_process_dead(worker.pid, str(metrics_dir))
    finally:
        terminate()  # an error of the supervisor's own leaves no worker behind
        shutil.rmtree(shared, ignore_errors=True)
    if not stop_requested and ended is not None:
        return _exit_status(ended.returncode) or 1  # even a worker's clean exit is a fault
    # A worker still starting when asked to stop may end by the SIGTERM itself (before
    # Python has its handler): the stop asked for, not a fault.
    return max((0 if w.returncode == -signal.SIGTERM and stop_requested
                else _exit_status(w.returncode) for w in workers), default=0)


def _wait(worker: subprocess.Popen[bytes]) -> None:
    try:
        worker.wait(_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        log.error("Worker %d still running %.0f s after SIGTERM; killing it", worker.pid,
                  _STOP_SECONDS)
        worker.kill()
        worker.wait()


def _exit_status(returncode: int | None) -> int:
    """A worker's end as a process exit status: a signal N as 128 + N, as shells say it."""
    if returncode is None:
        return 0
    return 128 - returncode if returncode < 0 else returncode


def _describe(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """For Popen's ``preexec_fn``: the worker gets SIGTERM when ``parent`` dies, however it
    dies. Linux only (prctl); elsewhere a supervisor killed with SIGKILL leaves its workers
    running, and a warning says so."""
    if not sys.platform.startswith("linux"):
        log.warning("Workers cannot be tied to the supervisor's life on %s: if it is "
                    "killed with SIGKILL, stop them yourself", sys.platform)
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork

    def arm() -> None:  # in the child, between fork and exec: nothing that allocates locks
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


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
