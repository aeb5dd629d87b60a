"""What waits in a queue: a caller's request, and the pieces of it that batches carry."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol

import numpy as np

from onnx_serving.server.errors import FailedPrecondition

Arrays = Mapping[str, np.ndarray]


class Awaited(Protocol):
    """Whether a request's caller still waits (the runtime's Deadline is one)."""

    def check(self) -> None:
        """Raises a ServingError once nobody waits for the answer."""


class Request:
    """One ``submit`` call; its thread blocks in ``wait`` until every piece is settled.

    A plain lock, acquired at birth and released once, is the cheapest one-shot
    signal the standard library offers. Requests split across batches also get
    a second lock to count their pieces in.
    """

    __slots__ = ("_count_lock", "_done", "_error", "_outputs", "_pieces", "_remaining", "_tb",
                 "awaited")

    def __init__(self, awaited: Awaited | None = None) -> None:
        self.awaited = awaited
        self._done = threading.Lock()
        self._done.acquire()
        self._outputs: dict[str, np.ndarray] = {}
        self._error: BaseException | None = None
        self._tb: TracebackType | None = None
        self._remaining = 1
        self._pieces: list[dict[str, np.ndarray] | None] = []
        self._count_lock: threading.Lock | None = None

    def expect(self, pieces: int) -> None:
        """Called before the pieces are queued, when the request is split in ``pieces``."""
        self._remaining = pieces
        if pieces > 1:
            self._pieces = [None] * pieces
            self._count_lock = threading.Lock()

    def deliver(self, index: int, outputs: dict[str, np.ndarray]) -> None:
        """Piece ``index`` ran; the caller wakes once the last piece has."""
        if self._count_lock is None:
            self._outputs = outputs
            self._done.release()
            return
        with self._count_lock:
            if self._remaining == 0:  # already failed
                return
            self._pieces[index] = outputs
            self._remaining -= 1
            if self._remaining:
                return
        try:
            self._outputs = _join(self._pieces)
        except (KeyError, ValueError) as exc:
            # With pad_variable_length_inputs, pieces padded in different batches differ.
            self._error = FailedPrecondition(
                f"The pieces of a split request returned outputs that cannot be joined: {exc}"
            )
        self._done.release()

    def fail(self, error: BaseException) -> None:
        """The request fails with ``error``; pieces still running are ignored."""
        if self._count_lock is not None:
            with self._count_lock:
                if self._remaining == 0:
                    return
                self._remaining = 0
        self._error = error
        self._tb = error.__traceback__
        self._done.release()

    def wait(self) -> dict[str, np.ndarray]:
        self._done.acquire()
        if self._error is not None:
            raise self._error.with_traceback(self._tb)
        return self._outputs


def _join(pieces: list[dict[str, np.ndarray] | None]) -> dict[str, np.ndarray]:
    parts = [p for p in pieces if p is not None]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class Task:
    """A request's rows (all, or one piece) as they sit in a batch."""

    __slots__ = ("enqueued", "index", "inputs", "request", "rows")

    def __init__(
        self, request: Request, index: int, inputs: Arrays, rows: int, enqueued: float
    ) -> None:
        self.request = request
        self.index = index
        self.inputs = inputs
        self.rows = rows
        self.enqueued = enqueued
