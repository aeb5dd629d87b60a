"""A request's deadline and its caller's presence, as plain values the core can read.

TF Serving turns a gRPC deadline into the session's RunOptions timeout, so an
expired request does not hold the model. Here each front end makes a
``Deadline`` (gRPC from ``context.time_remaining()`` and its termination
callback, REST from --rest_api_timeout_in_ms); the serving core and the
runtime only read it: a request whose deadline has passed, or whose caller
has gone, is not run (it would only delay the requests queued behind it),
and a run in progress whose caller goes is stopped with ONNX Runtime's
``RunOptions.terminate``.
"""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager, nullcontext

import onnxruntime as ort

from onnx_serving.server.errors import Cancelled, DeadlineExceeded

# Guards every deadline's runs and presence: held for a list append or a flag, so one
# lock for all costs nothing in contention and saves making one per request.
_LOCK = threading.Lock()


class Deadline:
    """When the caller stops waiting (None: never), and whether it has gone already."""

    __slots__ = ("_at", "_gone", "_runs")

    def __init__(self, seconds: float | None = None) -> None:
        self._at = None if seconds is None else time.monotonic() + seconds
        self._gone = False
        self._runs: list[ort.RunOptions] = []

    def check(self) -> None:
        """Raises unless the caller still waits for an answer."""
        if self._gone:
            raise Cancelled("The request was cancelled by its caller before the model ran")
        if self._at is not None and time.monotonic() >= self._at:
            raise DeadlineExceeded("The request's deadline passed before the model ran")

    def leave(self) -> None:
        """The caller has gone (cancelled, disconnected, timed out): runs in progress stop.

        Thread-safe, and harmless after the answer went out (gRPC calls it then too).
        """
        with _LOCK:
            self._gone = True
            runs, self._runs = self._runs, []
        for options in runs:
            options.terminate = True

    def run_options(self) -> AbstractContextManager[ort.RunOptions]:
        """Options for one run, terminated if the caller leaves while it runs."""
        return _Run(self)


class _Run:
    """``Deadline.run_options`` as a plain context manager: a request's path enters one,
    and a generator-based one costs several times as much."""

    __slots__ = ("_deadline", "_options")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._options = ort.RunOptions()

    def __enter__(self) -> ort.RunOptions:
        deadline, options = self._deadline, self._options
        with _LOCK:
            if deadline._gone:
                options.terminate = True
            deadline._runs.append(options)
        return options

    def __exit__(self, *exc_info: object) -> None:
        deadline = self._deadline
        with _LOCK:
            if self._options in deadline._runs:
                deadline._runs.remove(self._options)


def run_options(deadline: Deadline | None) -> AbstractContextManager[ort.RunOptions | None]:
    """Once a run may start (its slot taken): raises unless the caller still waits, else
    the run's options. Without a deadline, ONNX Runtime's defaults."""
    if deadline is None:
        return nullcontext()
    deadline.check()
    return deadline.run_options()
