"""Latency of both sides in one run, in alternating phases so machine noise hits both alike."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnx_serving.migration.compare_requests import SIDES, Request, Side, SideError


@dataclass(frozen=True)
class LatencyPlan:
    concurrency: int = 1
    rounds: int = 2
    seconds: float = 5.0  # per side per round, unless iterations is set
    iterations: int | None = None  # requests per side per round

    def order(self) -> list[str]:
        """A B B A A B ...: each side goes first as often, so drift hits both alike."""
        return [side for r in range(self.rounds) for side in (SIDES if r % 2 == 0 else SIDES[::-1])]


@dataclass
class Phase:
    side: str
    latencies: list[float]  # seconds, requests that succeeded
    errors: int
    seconds: float
    first_error: str | None


def run_phase(side_name: str, side: Side, requests: Sequence[Request], plan: LatencyPlan) -> Phase:
    """``concurrency`` threads, each sending the next request as soon as its last one ends."""
    counter = itertools.count()  # its next() is atomic, so threads share it without a lock
    deadline = time.perf_counter() + plan.seconds

    def worker() -> tuple[list[float], int, str | None]:
        latencies: list[float] = []
        errors, first_error = 0, None
        while True:
            n = next(counter)
            if plan.iterations is not None:
                if n >= plan.iterations:
                    break
            elif time.perf_counter() >= deadline:
                break
            request = requests[n % len(requests)]
            start = time.perf_counter()
            try:
                side.send(request)
            except SideError as exc:
                errors += 1
                first_error = first_error or str(exc)
            else:
                latencies.append(time.perf_counter() - start)
        return latencies, errors, first_error

    start = time.perf_counter()
    with ThreadPoolExecutor(plan.concurrency) as pool:
        results = [f.result() for f in [pool.submit(worker) for _ in range(plan.concurrency)]]
    elapsed = time.perf_counter() - start
    return Phase(
        side_name,
        [latency for latencies, _, _ in results for latency in latencies],
        sum(errors for _, errors, _ in results),
        elapsed,
        next((first for _, _, first in results if first), None),
    )


def measure_latency(
    sides: Mapping[str, Side], requests: Sequence[Request], plan: LatencyPlan
) -> list[Phase]:
    return [run_phase(name, sides[name], requests, plan) for name in plan.order()]


def latency_stats(phases: Sequence[Phase]) -> dict[str, Any]:
    ms = np.array([latency for phase in phases for latency in phase.latencies]) * 1000
    seconds = sum(phase.seconds for phase in phases)
    stats: dict[str, Any] = {
        "requests": int(ms.size),
        "errors": sum(phase.errors for phase in phases),
        "first_error": next((p.first_error for p in phases if p.first_error), None),
        "seconds": seconds,
        "throughput_rps": ms.size / seconds if seconds > 0 else None,
    }
    for name, value in (("p50", 50), ("p95", 95), ("p99", 99)):
        stats[f"{name}_ms"] = float(np.percentile(ms, value)) if ms.size else None
    stats["mean_ms"] = float(ms.mean()) if ms.size else None
    return stats


def latency_summary(phases: Sequence[Phase], plan: LatencyPlan) -> dict[str, Any]:
    by_side = {side: latency_stats([p for p in phases if p.side == side]) for side in SIDES}
    ratio = {}
    for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_rps"):
        base, cand = by_side["baseline"][key], by_side["candidate"][key]
        ratio[key] = cand / base if base and cand is not None else None
    return {
        "concurrency": plan.concurrency,
        "rounds": plan.rounds,
        "seconds_per_phase": None if plan.iterations else plan.seconds,
        "iterations_per_phase": plan.iterations,
        "order": plan.order(),
        **by_side,
        "ratio": ratio,
    }


