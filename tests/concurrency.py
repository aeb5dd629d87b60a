"""Many callers at once, for the tests that check nobody gets another's answer."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_concurrently(target: Callable[[int], None], count: int, timeout: float = 120) -> None:
    """``target(i)`` for every i below ``count``, each on a thread of its own, all at once;
    fails if any is still running after ``timeout`` seconds (a hang, not a slow test)."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {count} callers still running after {timeout} s"
