"""One queue of compatible requests, formed into batches as SharedBatchScheduler's queues are.

A queue holds closed batches waiting for a thread plus one open batch that
requests join. Every method runs under the scheduler's lock, so none locks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from onnx_serving.server.batching._request import Arrays, Request, Task
from onnx_serving.server.batching.options import BatchingOptions
from onnx_serving.server.errors import Unavailable


class Batch:
    __slots__ = ("rows", "tasks")

    def __init__(self, tasks: list[Task], rows: int) -> None:
        self.tasks = tasks
        self.rows = rows


@dataclass(frozen=True)
class Limits:
    """The options a queue needs, precomputed (seconds, not microseconds)."""

    execution_batch_size: int
    timeout: float
    max_enqueued_batches: int
    splitting: bool

    @classmethod
    def from_options(cls, options: BatchingOptions) -> Limits:
        return cls(
            execution_batch_size=options.execution_batch_size,
            timeout=options.batch_timeout_micros / 1e6,
            max_enqueued_batches=options.max_enqueued_batches,
            splitting=options.enable_large_batch_splitting,
        )


class BatchQueue:
    __slots__ = (
        "_closed", "_limits", "_open", "_open_rows", "_open_since", "execute", "key", "on_empty",
        "scheduled",
    )

    def __init__(
        self,
        key: Hashable,
        limits: Limits,
        execute: Callable[[Batch], None],
        on_empty: Callable[[BatchQueue], None],
    ) -> None:
        self.key = key
        self.execute = execute
        self.on_empty = on_empty
        self.scheduled = False  # in the scheduler's round-robin
        self._limits = limits
        self._closed: deque[Batch] = deque()
        self._open: list[Task] = []
        self._open_rows = 0
        self._open_since = 0.0

    def add(self, request: Request, inputs: Arrays, rows: int, now: float) -> bool:
        """Queues the request (split when allowed); True when a batch thread should look.

        Raises Unavailable when the queue is full, with TF Serving's messages.
        """
        limit = self._limits.execution_batch_size
        enqueued = len(self._closed) + 1  # the open batch counts, as in TF Serving
        if self._limits.splitting:
            capacity = (
                (self._limits.max_enqueued_batches - enqueued) * limit + limit - self._open_rows
            )
            if rows > capacity:
                raise Unavailable(
                    "The batch scheduling queue to which this task was submitted is full; task "
                    f"size is {rows} but scheduling capacity is only {capacity} "
                    f"(num_enqueued_batches={enqueued}, max_enqueued_batches="
                    f"{self._limits.max_enqueued_batches}, open_batch_size={self._open_rows}, "
                    f"max_execution_batch_size={limit})"
                )
            sizes = _split_sizes(rows, limit - self._open_rows, limit)
        else:
            if (
                self._open_rows + rows > limit
                and enqueued >= self._limits.max_enqueued_batches
            ):
                raise Unavailable(
                    "The batch scheduling queue to which this task was submitted is full; "
                    f"currently {enqueued} batches enqueued and max_enqueued_batches is "
                    f"{self._limits.max_enqueued_batches}"
                )
            sizes = [rows]
        request.expect(len(sizes))
        was_idle = not self._open and not self._closed
        start = 0
        for index, size in enumerate(sizes):
            piece = inputs
            if len(sizes) > 1:
                piece = {name: array[start : start + size] for name, array in inputs.items()}
            start += size
            if self._open_rows + size > limit:
                self._close_open()
            if not self._open:
                self._open_since = now
            self._open.append(Task(request, index, piece, size, now))
            self._open_rows += size
        return (
            was_idle
            or bool(self._closed)
            or self._open_rows >= limit
            or self._limits.timeout <= 0
        )

    def _close_open(self) -> None:
        self._closed.append(Batch(self._open, self._open_rows))
        self._open = []
        self._open_rows = 0

    def pending(self) -> bool:
        return bool(self._open or self._closed)

    def waiting(self) -> int:
        """Tasks not yet handed to a batch thread."""
        return len(self._open) + sum(len(batch.tasks) for batch in self._closed)

    def take(self, now: float) -> Batch | None:
        """The next batch to run, if one may run now: a closed one, or a due open one."""
        if self._closed:
            return self._closed.popleft()
        if self._open and (
            self._open_rows >= self._limits.execution_batch_size
            or now >= self._open_since + self._limits.timeout
        ):
            batch = Batch(self._open, self._open_rows)
            self._open = []
            self._open_rows = 0
            return batch
        return None

    def due(self) -> float:
        """When the open batch may run; only meaningful when ``take`` just returned None."""
        return self._open_since + self._limits.timeout

    def drain(self) -> list[Task]:
        """Removes and returns every waiting task (on close)."""
        tasks = [task for batch in self._closed for task in batch.tasks] + self._open
        self._closed.clear()
        self._open = []
        self._open_rows = 0
        return tasks


def _split_sizes(rows: int, room: int, limit: int) -> list[int]:
    """Piece sizes: first fill the open batch's room, then whole batches of ``limit``."""
    sizes: list[int] = []
    if room > 0:
        sizes.append(min(rows, room))
        rows -= sizes[0]
    while rows > 0:
        sizes.append(min(rows, limit))
        rows -= sizes[-1]
    return sizes
