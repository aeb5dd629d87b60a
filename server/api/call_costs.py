"""Which model calls are cheap enough to answer on the thread that receives them.

Handing a call to a worker thread costs about 0.08 ms of CPU on gRPC's unary lane and
more on REST's event loop: most of a call that runs a small model. A transport answers
a call where it arrives when the calls of its model have cost at most ``limit`` seconds
of their answering thread's CPU (a moving mean, counted on every successful call
wherever it ran; --inline_call_cpu_us), and hands the rest to its workers, where a
call that costs more holds up no other call and runs beside others.
"""

from __future__ import annotations

from collections.abc import Hashable

# The moving mean's weight of each new call.
_WEIGHT = 1 / 16


class CallCosts:
    """CPU seconds per call, by key (a method's or route's model): only keys of calls that
    succeeded are kept, so they are bounded by the models served."""

    __slots__ = ("_costs", "limit")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._costs: dict[Hashable, float] = {}

    def cheap(self, key: Hashable | None) -> bool:
        """Whether ``key``'s calls are known to cost at most the limit (never: 0)."""
        cost = self._costs.get(key) if key is not None and self.limit > 0 else None
        return cost is not None and cost <= self.limit

    def spent(self, key: Hashable, seconds: float) -> None:
        """One successful call of ``key`` took ``seconds`` of its thread's CPU."""
        cost = self._costs.get(key)
        self._costs[key] = seconds if cost is None else cost + (seconds - cost) * _WEIGHT
