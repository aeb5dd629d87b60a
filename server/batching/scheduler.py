"""Batch threads shared by any number of queues, as TF Serving's SharedBatchScheduler.

TF Serving runs every model's batches on one pool, so ``num_batch_threads``
bounds the model runs in flight server-wide; pass one scheduler to every
Batcher to get the same. Threads visit the queues with work round-robin, so a
busy model cannot starve a quiet one.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from onnx_serving.server.batching._queue import Batch, BatchQueue
from onnx_serving.server.batching._request import Task
from onnx_serving.server.errors import InvalidArgument, Unavailable


class BatchScheduler:
    """``num_batch_threads`` threads running the batches of every queue enqueued on it."""

    def __init__(self, num_batch_threads: int, thread_pool_name: str = "batch_threads") -> None:
        if num_batch_threads < 1:
            raise InvalidArgument(f"num_batch_threads must be positive; was {num_batch_threads}")
        self.lock = threading.Lock()
        """Guards the scheduler and every queue on it; Batchers take it to enqueue."""
        self.closed = False
        self._ready: deque[BatchQueue] = deque()  # queues with waiting tasks, round-robin
        # Idle threads, each waiting on its own condition; the most recently idle is
        # woken first, as its cache is warmest and it is least likely to be descheduled.
        self._idle: list[threading.Condition] = []
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_pool_name}_{i}", daemon=True)
            for i in range(num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def enqueued(self, queue: BatchQueue, wake: bool) -> None:
        """Called, under ``lock``, after a task joined ``queue``."""
        if not queue.scheduled:
            queue.scheduled = True
            self._ready.append(queue)
        if wake:
            self._wake_one()

    def _wake_one(self) -> None:
        if self._idle:
            self._idle.pop().notify()

    def withdraw(self, queue: BatchQueue) -> list[Task]:
        """Under ``lock``: takes ``queue`` out of the rotation; returns its waiting tasks."""
        if queue.scheduled:
            self._ready.remove(queue)
            queue.scheduled = False
        return queue.drain()

    def close(self) -> None:
        """Stops the threads once their running batches finish; waiting requests fail."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            tasks = [task for queue in self._ready for task in queue.drain()]
            for queue in self._ready:
                queue.scheduled = False
            self._ready.clear()
            for idle in self._idle:
                idle.notify()
            self._idle.clear()
        error = Unavailable("The batch scheduler is shutting down")
        for task in tasks:
            task.request.fail(error)
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join()

    def _work(self) -> None:
        wakeup = threading.Condition(self.lock)
        while True:
            with self.lock:
                while True:
                    if self.closed:
                        return
                    found = self._next(time.monotonic())
                    if isinstance(found, tuple):
                        break
                    self._idle.append(wakeup)
                    wakeup.wait(found)
                    if wakeup in self._idle:  # timed out rather than woken
                        self._idle.remove(wakeup)
                if self._ready:
                    # Work remains: make sure an idle thread is watching its deadline.
                    self._wake_one()
            queue, batch = found
            queue.execute(batch)

    def _next(self, now: float) -> tuple[BatchQueue, Batch] | float | None:
        """Under ``lock``: the first queue, round-robin, with a batch that may run now.

        Otherwise how long until an open batch falls due (None: no work at all).
        """
        ready = self._ready
        soonest: float | None = None
        for _ in range(len(ready)):
            queue = ready[0]
            batch = queue.take(now)
            if batch is not None:
                ready.popleft()
                if queue.pending():
                    ready.append(queue)
                else:
                    queue.scheduled = False
                    queue.on_empty(queue)
                return queue, batch
            ready.rotate(-1)
            due = queue.due()
            soonest = due if soonest is None else min(soonest, due)
        return None if soonest is None else max(soonest - now, 0.0)
