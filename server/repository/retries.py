"""The retry ticker: wakes the manager when a failed load's retry is due.

TF Serving's AspiredVersionsManager retries a failed load after
--load_retry_interval_micros, up to --max_num_load_retries times; the retry
is started by the manager's reconcile, which this thread calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# How often the ticker looks (TF Serving's manage-state interval is 100 ms too).
TICK_SECONDS = 0.1


class RetryTicker:
    """Calls ``tick`` under ``lock`` every ``TICK_SECONDS`` until ``closed()``."""

    def __init__(
        self, lock: threading.Condition, tick: Callable[[], None], closed: Callable[[], bool]
    ) -> None:
        self._lock = lock
        self._tick = tick
        self._closed = closed
        self._thread = threading.Thread(target=self._run, name="retries", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed():
                    return
                self._lock.wait(TICK_SECONDS)
                self._tick()
