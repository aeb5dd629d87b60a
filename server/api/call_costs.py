"""Which model calls are cheap enough to answer on the thread that receives them.

Handing a call to a worker thread costs about 0.08 ms of CPU on gRPC's unary lane and
more on REST's event loop: most of a call that runs a small model. A transport answers
a call where it arrives when the calls of its model have cost at most ``limit`` seconds
of their answering thread's CPU (a moving mean, counted on every successful call
wherever it ran; --inline_call_cpu_us), and hands the rest to its workers, where a
call that costs more holds up no other call and runs beside others.

A call's cost grows with its request, so calls are costed by model and by the size of
their request to a power of two (``sized``): one large request to a model whose small
ones are cheap is a size not yet known, and goes to a worker instead of holding up every
call behind it.
"""

from __future__ import annotations

from collections.abc import Hashable

# The moving mean's weight of each new call.
_WEIGHT = 1 / 16


def sized(key: Hashable, size: int) -> tuple[Hashable, int]:
    """The key of a call of ``key`` whose request is ``size`` bytes: one per power of two,
    so a model has a few dozen at most."""
    return key, size.bit_length()


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
