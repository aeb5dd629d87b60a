"""Readings taken as a measuring window opens and closes: CPU time and server timings.

On a small machine the client and the server share the cores, so throughput is
about cores / (client CPU + server CPU per request). Reading both per request
says which side a gRPC contender's time goes to: the client's share is the same
for every gRPC contender (same code, same bytes), and the echo server's share is
what gRPC Python itself costs. Server CPU counts the whole process tree, so a
server with worker processes is counted whole.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.suite import stages

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from "state" on


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of ``root`` and its descendants (threads are in their process's)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is None:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


@dataclass(frozen=True)
class Reading:
    client_cpu: float
    server_cpu: float | None
    totals: stages.Totals | None


@dataclass
class Probe:
    """What to read for one contender: the server's pid and metrics port, when it has them."""

    server_pid: int | None = None
    metrics: tuple[int, str] | None = None  # (REST port, model name)
    readings: list[Reading] = field(default_factory=list)

    def read(self) -> None:
        self.readings.append(Reading(
            client_cpu=time.process_time(),
            server_cpu=tree_cpu_seconds(self.server_pid) if self.server_pid else None,
            totals=stages.read(*self.metrics) if self.metrics else None,
        ))

    def per_request(self, requests: int) -> tuple[float, float | None, dict[str, float]]:
        """(client CPU ms, server CPU ms or None, server stage means ms) over the window."""
        first, last = self.readings[0], self.readings[-1]
        n = max(requests, 1)
        client = (last.client_cpu - first.client_cpu) / n * 1000
        server = None
        if last.server_cpu is not None and first.server_cpu is not None:
            server = (last.server_cpu - first.server_cpu) / n * 1000
        means = last.totals.mean_ms_since(first.totals) if last.totals and first.totals else {}
        return client, server, means
