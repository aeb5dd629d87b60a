"""Server-side batching around one callable: many callers' rows in, one ``run`` per batch.

A Batcher knows nothing of models: it calls ``run`` with inputs stacked on
dimension 0 and hands each caller back its own rows. Make one per model
version and signature; share one BatchScheduler between them all to bound the
runs in flight server-wide, as TF Serving does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from onnx_serving.server.batching._queue import Batch, BatchQueue, Limits
from onnx_serving.server.batching._request import Awaited, Request, Task
from onnx_serving.server.batching._tensors import batch_key, merge_inputs, split_outputs
from onnx_serving.server.batching.options import BatchingOptions
from onnx_serving.server.batching.scheduler import BatchScheduler
from onnx_serving.server.errors import InvalidArgument, ServingError, Unavailable

log = logging.getLogger(__name__)

Run = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]
"""Runs one batch: inputs by name, each with the batch on dimension 0; outputs likewise."""
Observe = Callable[[int, int, list[tuple[int, float]]], None]
"""Told of every batch run: rows, rows after padding, and each task's rows and seconds in
the queue."""


@dataclass(frozen=True)
class BatchStats:
    """Counters since the Batcher started; cheap enough to log now and then."""

    batches: int = 0
    """``run`` calls made for batches (failed ones included)."""
    failed_batches: int = 0
    rows: int = 0
    """Request rows those batches carried, padding excluded."""
    padded_rows: int = 0
    """Rows added to reach an allowed batch size."""
    tasks: int = 0
    """Requests (or pieces of split requests) batched."""
    unbatched: int = 0
    """Requests run alone because their inputs cannot be batched (scalars, say)."""

    @property
    def mean_batch_size(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class Batcher:
    """Batches concurrent ``submit`` calls into ``run`` calls, TF Serving style.

    A batch runs once it is full or ``batch_timeout_micros`` after its first
    request, when a batch thread is free. Requests of different input names,
    dtypes or non-batch shapes are never mixed (with
    ``pad_variable_length_inputs``, shapes may differ and are padded).
    """

    def __init__(
        self,
        run: Run,
        options: BatchingOptions,
        observe: Observe | None = None,
        scheduler: BatchScheduler | None = None,
    ) -> None:
        """``scheduler``: shared batch threads; by default the Batcher starts its own."""
        self._run = run
        self._options = options
        self._observe = observe
        self._owns_scheduler = scheduler is None
        if scheduler is None:
            scheduler = BatchScheduler(options.num_batch_threads, options.thread_pool_name)
        self._scheduler = scheduler
        self._lock = self._scheduler.lock
        self._limits = Limits.from_options(options)
        self._pad = options.pad_variable_length_inputs
        self._queues: dict[Hashable, BatchQueue] = {}
        self._closed = False
        self._stats_lock = threading.Lock()
        self._counts = dict.fromkeys(BatchStats.__dataclass_fields__, 0)

    @property
    def options(self) -> BatchingOptions:
        return self._options

    @property
    def stats(self) -> BatchStats:
        with self._stats_lock:
            return BatchStats(**self._counts)

    @property
    def pending(self) -> int:
        """Requests (or pieces of split ones) waiting for a batch thread: the queue depth."""
        with self._lock:
            return sum(queue.waiting() for queue in self._queues.values())

    def submit(
        self, inputs: Mapping[str, np.ndarray], awaited: Awaited | None = None
    ) -> dict[str, np.ndarray]:
        """Runs ``inputs`` in some batch and returns this request's rows of the outputs.

        Blocks until then. Raises InvalidArgument for a request larger than
        max_batch_size, Unavailable when the queue is full or the Batcher
        closed, and whatever ``run`` raised for the batch. A request whose caller
        stopped waiting (``awaited.check()`` raises) while it was queued is left out
        of its batch with that error.
        """
        key = batch_key(inputs, self._pad)
        if key is None:
            if self._closed:
                raise Unavailable("The batch scheduling queue is closed")
            with self._stats_lock:
                self._counts["unbatched"] += 1
            return dict(self._run(dict(inputs)))
        rows, queue_key = key
        if rows > self._options.max_batch_size:
            raise InvalidArgument(
                f"Task size {rows} is larger than maximum input batch size "
                f"{self._options.max_batch_size}"
            )
        request = Request(awaited)
        with self._lock:
            if self._closed or self._scheduler.closed:
                raise Unavailable("The batch scheduling queue is closed")
            queue = self._queues.get(queue_key)
            if queue is None:
                queue = BatchQueue(queue_key, self._limits, self._execute, self._retire)
                self._queues[queue_key] = queue
            wake = queue.add(request, inputs, rows, time.monotonic())
            self._scheduler.enqueued(queue, wake)
        return request.wait()

    def close(self) -> None:
        """Fails waiting requests; batches already running finish. Idempotent."""
        with self._lock:
            self._closed = True
            tasks = [task for q in self._queues.values() for task in self._scheduler.withdraw(q)]
            self._queues.clear()
        error = Unavailable("The batch scheduling queue is closed")
        for task in tasks:
            task.request.fail(error)
        if self._owns_scheduler:
            self._scheduler.close()

    def __enter__(self) -> Batcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _retire(self, queue: BatchQueue) -> None:
        """Under the lock: ``queue`` ran dry; forget it so one-off shapes don't pile up."""
        if self._queues.get(queue.key) is queue:
            del self._queues[queue.key]

    def _execute(self, batch: Batch) -> None:
        """On a batch thread: merge, run, split, wake every caller, then report."""
        started = time.monotonic()
        tasks = _awaited(batch.tasks)
        if not tasks:
            return
        rows = sum(task.rows for task in tasks)
        padded = self._options.padded_size(rows)
        failed = False
        try:
            inputs = merge_inputs(tasks, rows, padded, self._pad)
            outputs = self._run(inputs)
            results = split_outputs(outputs, [task.rows for task in tasks], padded)
        except BaseException as exc:
            failed = True
            for task in tasks:
                task.request.fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for task, result in zip(tasks, results, strict=True):
                task.request.deliver(task.index, result)
        with self._stats_lock:
            counts = self._counts
            counts["batches"] += 1
            counts["failed_batches"] += failed
            counts["rows"] += rows
            counts["padded_rows"] += padded - rows
            counts["tasks"] += len(tasks)
        if self._observe is not None:
            try:
                self._observe(rows, padded,
                              [(task.rows, started - task.enqueued) for task in tasks])
            except Exception:
                # Metrics must not take batch threads down; say so and carry on.
                log.exception("Batch observer failed")



def _awaited(tasks: list[Task]) -> list[Task]:
    """The tasks whose callers still wait; the others fail now, before the batch runs."""
    kept = []
    for task in tasks:
        awaited = task.request.awaited
        try:
            if awaited is not None:
                awaited.check()
        except ServingError as exc:
            task.request.fail(exc)
            continue
        kept.append(task)
    return kept
