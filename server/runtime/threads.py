"""How many runs and threads a model gets: chosen from the cores, not guessed.

ONNX Runtime's own default is one intra-op thread per core for every session,
spinning between runs. In a server that oversubscribes the cores as soon as two
requests run at once (each run brings the whole pool's work onto the same
cores), and the spinning burns the cores that gRPC, the next request's decoding
and the other models need. Here:

- **instances**: runs of one model version at once (Triton's instance count; it
  gives ONNX Runtime on the CPU two). Further requests wait for a slot instead
  of oversubscribing the cores. Every slot runs on the same session, whose
  ``run`` is thread-safe and allocates each run's intermediates apart, so the
  weights (prepacked ones included) exist once. Default ``min(2, cores)``.
- **intra-op threads**: ``cores - instances + 2``, at most ``cores``: every core
  with the default two instances. A session's pool has that many threads less
  one (the calling thread works too) and is shared by its concurrent runs, so a
  lone request gets the whole machine, and with every instance running
  ``instances + intra-op threads - 1`` threads compute at once: one more than the
  cores. Each session with more than one thread keeps an idle pool (spinning
  off); a server of many small models can set ``intra_op_threads`` to 1 (no pool
  at all) or use the global pools below.
- **inter-op threads**: 1; sequential execution has no inter-op work.
- **spinning**: off. A pool's threads spin after each run waiting for the
  next; in a server the next run is a network round trip away.

An explicit value in runtime.json or a flag wins over each default.

``"thread_pool": "global"`` (server-wide only) puts every session on ONNX
Runtime's process-wide pools instead, sized once at start: thread count stays
bounded however many models load, with intra-op threads above one. Its Python
API sets only the pools' sizes: they spin, and that cannot be turned off.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Final

import onnxruntime as ort

from onnx_serving.server.errors import ConfigError
from onnx_serving.server.runtime.config import RuntimeConfig

log = logging.getLogger(__name__)

SPINNING: Final = "session.intra_op.allow_spinning"
SESSION_POOLS, GLOBAL_POOLS = "session", "global"
_DEFAULT_INSTANCES: Final = 2


_processes = 1


def share_cores(processes: int) -> None:
    """Server processes sharing this machine's cores (--num_workers): each sizes its
    threads to its share."""
    global _processes
    _processes = max(1, processes)


def cores() -> int:
    """This process's share of the CPUs it may run on (its affinity mask, as a
    container's cpuset sets, divided among --num_workers processes)."""
    total = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return max(1, total // _processes)


@dataclass(frozen=True)
class Threads:
    instances: int
    intra_op_threads: int
    inter_op_threads: int
    spinning: bool
    global_pools: bool

    @property
    def busy_threads(self) -> int:
        """Threads computing when every instance of one model runs: each run's own thread,
        and the pool's workers (intra-op threads - 1), which concurrent runs of a session
        share."""
        return self.instances + self.intra_op_threads - 1

    def oversubscription(self, cpus: int) -> float:
        """Busy threads per core."""
        return self.busy_threads / cpus

    def oversubscribes(self, cpus: int) -> bool:
        """More than one thread beyond the cores computes with every instance running:
        the defaults allow that one, for a lone request's sake."""
        return self.busy_threads > cpus + 1

    def describe(self) -> str:
        pools = "global pools" if self.global_pools else "per-session pools"
        return (f"{self.instances} instance(s) x {self.intra_op_threads} intra-op thread(s), "
                f"{self.inter_op_threads} inter-op, spinning {'on' if self.spinning else 'off'}, "
                f"{pools}")


def choose(config: RuntimeConfig, cpus: int | None = None) -> Threads:
    """The effective settings: what the config names, the rest sized to the cores."""
    cpus = cpus or cores()
    instances, intra = config.instances, config.intra_op_threads
    if not instances:
        instances = max(1, cpus // intra) if intra else min(_DEFAULT_INSTANCES, cpus)
    if not intra:  # the pool is shared by the instances' runs: see the module's docstring
        intra = max(1, min(cpus, cpus - instances + 2))
    spinning = config.session_config.get(SPINNING, "0") != "0"
    return Threads(instances, intra, config.inter_op_threads or 1, spinning,
                   config.thread_pool == GLOBAL_POOLS)


class Slots:
    """At most ``n`` holders at once, the others wait (FIFO enough for a request path).

    Tokens in a C-implemented queue: a request pays about half a microsecond here,
    where threading.Semaphore, written in Python, costs 10-20 µs on a busy machine.
    """

    __slots__ = ("_get", "_put")

    def __init__(self, n: int) -> None:
        tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            tokens.put(None)
        self._get, self._put = tokens.get, tokens.put

    def __enter__(self) -> None:
        self._get()

    def __exit__(self, *exc_info: object) -> None:
        self._put(None)


_global_lock = threading.Lock()
_global_sizes: tuple[int, int] | None = None


def start_global_pools(threads: Threads) -> None:
    """Creates ONNX Runtime's process-wide pools, once; sessions then must all use them
    (ONNX Runtime refuses per-session pools once global ones exist)."""
    global _global_sizes
    sizes = (threads.intra_op_threads, threads.inter_op_threads)
    with _global_lock:
        if _global_sizes is None:
            try:
                ort.set_global_thread_pool_sizes(*sizes)
            except ort.capi.onnxruntime_pybind11_state.Fail as exc:  # created elsewhere
                raise ConfigError(f"ONNX Runtime's global thread pools: {exc}") from exc
            _global_sizes = sizes
            log.info("ONNX Runtime global thread pools: %d intra-op, %d inter-op", *sizes)
        elif _global_sizes != sizes:
            raise ConfigError(f"ONNX Runtime's global thread pools already have sizes "
                              f"{_global_sizes}; they cannot be resized to {sizes}")


def warn_if_oversubscribed(threads: Threads, what: str, cpus: int | None = None) -> bool:
    cpus = cpus or cores()
    if threads.oversubscribes(cpus):
        log.warning("%s: %s keeps %.1f threads busy per core on %d core(s): runs will "
                    "oversubscribe the cores", what, threads.describe(),
                    threads.oversubscription(cpus), cpus)
        return True
    return False
