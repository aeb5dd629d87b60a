"""Closed-loop load: N client threads, each sending its next request when the last returns.

Every thread runs from one start until a fixed deadline; a request counts when
it *ends* inside the measuring window, which opens after the warm-up. That
keeps throughput honest when requests are long (a slow request in flight at
the deadline is neither counted nor waited for in the figures) and leaves
first-call costs (connection set-up, ONNX Runtime's first run, TensorFlow's
tracing) out. Hooks run on the main thread as the window opens and closes, so
server-side counters can be read for exactly the measured requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.suite.runners import Call


@dataclass
class Sample:
    """What one or more measuring windows saw."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    seconds: float = 0.0  # total window length
    errors: int = 0
    first_error: str | None = None

    def add(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.seconds += other.seconds
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.latencies) * 1000) if self.latencies else float("nan")


def run(
    callers: Sequence[Call],
    *,
    seconds: float,
    warmup: float,
    on_open: Callable[[], None] | None = None,
    on_close: Callable[[], None] | None = None,
) -> Sample:
    """One thread per caller (so concurrency is ``len(callers)``) for warmup + seconds."""
    lead = 0.05  # lets every thread reach the start line
    start = time.perf_counter() + lead
    opens, closes = start + warmup, start + warmup + seconds
    results: list[tuple[list[float], int, str | None]] = [([], 0, None)] * len(callers)
    barrier = threading.Barrier(len(callers) + 1)

    def client(index: int, call: Call) -> None:
        latencies: list[float] = []
        errors, first_error = 0, None
        barrier.wait()
        while True:
            began = time.perf_counter()
            if began >= closes:
                break
            try:
                call()
            except Exception as exc:  # counted and shown: a failing contender is a finding
                ended = time.perf_counter()
                if opens <= ended <= closes:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                continue
            ended = time.perf_counter()
            if opens <= ended <= closes:
                latencies.append(ended - began)
        results[index] = (latencies, errors, first_error)

    threads = [threading.Thread(target=client, args=(i, c), daemon=True)
               for i, c in enumerate(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    _sleep_until(opens)
    if on_open:
        on_open()
    _sleep_until(closes)
    if on_close:
        on_close()
    for thread in threads:
        thread.join()
    sample = Sample(seconds=seconds)
    for latencies, errors, first_error in results:
        sample.add(Sample(latencies, 0.0, errors, first_error))
    return sample


def _sleep_until(moment: float) -> None:
    while (left := moment - time.perf_counter()) > 0:
        time.sleep(min(left, 0.5))
