"""The run as markdown: settings, one table of every cell with its ratios, where the
server's time goes, the targets met or missed; and the same as JSON for keeping."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict

from bench.suite import many
from bench.suite.plan import ECHO, ORT, SERVING, Plan
from bench.suite.results import Cell, Results
from bench.suite.stages import HANDLER
from bench.suite.targets import Target


def _f(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cells(results: Results) -> list[str]:
    rows = []
    for cell in results.cells:
        ort = results.cell(cell.model, cell.clients, ORT)
        s = cell.sample
        rows.append([
            cell.model, str(cell.clients), cell.contender,
            _f(s.percentile_ms(50)), _f(s.percentile_ms(99)), _f(s.throughput, 1),
            _ratio(s.percentile_ms(50), ort.sample.percentile_ms(50)) if ort else "-",
            _ratio(s.throughput, ort.sample.throughput) if ort else "-",
            str(s.errors) if s.errors else "",
        ])
    return _table(["model", "clients", "contender", "p50 ms", "p99 ms", "req/s",
                   "p50 / ORT", "req/s / ORT", "errors"], rows)


def _overheads(results: Results) -> list[str]:
    """Ratios at each load: what the server adds over ORT, against the echo floor."""
    rows = []
    for cell in results.cells:
        if cell.contender != SERVING:
            continue
        ort = results.cell(cell.model, cell.clients, ORT)
        echo = results.cell(cell.model, cell.clients, ECHO)
        if not (ort and echo):
            continue
        over = cell.sample.percentile_ms(50) - ort.sample.percentile_ms(50)
        floor = echo.sample.percentile_ms(50)
        rows.append([cell.model, str(cell.clients), _f(over), _f(floor), _ratio(over, floor),
                     _ratio(cell.sample.throughput, echo.sample.throughput)])
    return _table(["model", "clients", "p50 over ORT, ms", "echo p50 ms",
                   "overhead / echo", "req/s / echo req/s"], rows)


def _where(results: Results) -> list[str]:
    rows = []
    for cell in results.cells:
        s = dict(cell.stages)
        handler = s.pop(HANDLER, math.nan)
        server_cpu = cell.server_cpu_ms if cell.server_cpu_ms is not None else math.nan
        rows.append([
            cell.model, str(cell.clients), cell.contender, _f(cell.sample.mean_ms),
            _f(cell.client_cpu_ms), _f(server_cpu), _f(handler),
            ", ".join(f"{k} {_f(v)}" for k, v in s.items()),
            _f(cell.sample.mean_ms - handler),
        ])
    return _table(["model", "clients", "contender", "latency", "client CPU", "server CPU",
                   "in handler", "handler stages", "outside handler"], rows)


def _sweep(sweep: list[Cell]) -> list[str]:
    rows = [[c.model, str(c.batch), _f(c.sample.percentile_ms(50)), _f(c.items_per_second, 1)]
            for c in sweep]
    return _table(["model", "batch", "p50 ms per batch", "items/s"], rows)


def _facts(results: Results) -> list[str]:
    rows = [[m, str(f.request_bytes), str(f.response_bytes), _f(f.encode_ms, 3),
             _f(f.decode_ms, 3), "; ".join(f.notes)] for m, f in results.facts.items()]
    return _table(["model", "request bytes", "response bytes", "client encode ms",
                   "client decode ms", "notes"], rows)


def _targets(targets: list[Target]) -> list[str]:
    rows = [[t.name, t.measured, f"**{t.status}**", t.why] for t in targets]
    return _table(["target", "measured", "result", "what bounds it"], rows)


def settings(plan: Plan) -> str:
    threads = (f"intra-op threads {plan.intra_op_threads}, inter-op threads "
               f"{plan.inter_op_threads}" if plan.intra_op_threads or plan.inter_op_threads
               else "the server's thread flags left out (its own choice: runtime/threads.py) "
                    "and ONNX Runtime's default session in-process (intra-op threads 0: one "
                    "per core, spinning)")
    grpc = (f"--grpc_max_threads={plan.grpc_threads}" if plan.grpc_threads
            else "no --grpc_max_threads (four per CPU)")
    return (
        f"Session options: graph optimization all, sequential, {threads}; "
        f"TensorFlow in-process: intra {plan.tf_intra_op_threads}, inter "
        f"{plan.tf_inter_op_threads} (0: its own choice). Server {grpc} (echo server: the same "
        f"pool). Client: pre-serialized requests over raw gRPC stubs, "
        f"{plan.channels} channels. Cells: {plan.seconds:g} s measured in {plan.rounds} "
        f"slot(s), {plan.warmup:g} s warm-up each; batch 1 per request. Batching contender: "
        + (f"`{plan.batching_parameters}`." if plan.batching_parameters
           else "`--enable_batching` with the server's default parameters.")
        + "".join(f" Variant `{label}`: `{' '.join(flags)}`." for label, flags in plan.variants)
        + (" ORT config entries: " + ", ".join(f"`{k}={v}`" for k, v in plan.ort_config) + "."
           if plan.ort_config else "")
    )


def markdown(results: Results, plan: Plan, targets: list[Target], machine: list[str],
             command: str) -> str:
    lines = ["## Setup", "", *(f"- {line}" for line in machine), f"- Command: `{command}`",
             f"- {settings(plan)}", "", "## Every cell", "", *_cells(results), "",
             "## Overhead over in-process ONNX Runtime against the transport floor", "",
             *_overheads(results), ""]
    if results.sweep:
        lines += ["## In-process ONNX Runtime over batch sizes (one caller)", "",
                  *_sweep(results.sweep), ""]
    lines += ["## Where the time goes (means per request, ms)", "",
              "CPU: the benchmark process (client, or the model for in-process contenders) "
              "and the server's process tree, per request. Handler: onnx-serving's own "
              "timings; outside handler = latency - handler (gRPC, protobuf, queues, client).",
              "", *_where(results), "",
              "## Payloads and the light client's cost", "", *_facts(results), ""]
    if results.many is not None:
        lines += ["## Many models on one server", "", *many.describe(results.many), ""]
    lines += ["## Targets", "", *_targets(targets), ""]
    if results.skipped:
        lines += ["## Skipped", ""]
        lines += [f"- {model} / {name}: {why}" for (model, name), why in results.skipped.items()]
        lines.append("")
    return "\n".join(lines)


def to_json(results: Results, plan: Plan, targets: list[Target], machine: list[str]) -> str:
    def cell(c: Cell) -> dict[str, object]:
        s = c.sample
        return {"model": c.model, "clients": c.clients, "contender": c.contender,
                "batch": c.batch, "p50_ms": s.percentile_ms(50), "p99_ms": s.percentile_ms(99),
                "mean_ms": s.mean_ms, "per_second": s.throughput, "requests": s.count,
                "errors": s.errors, "first_error": s.first_error, "stages_ms": c.stages,
                "client_cpu_ms": c.client_cpu_ms, "server_cpu_ms": c.server_cpu_ms}

    return json.dumps({
        "machine": machine, "plan": asdict(plan),
        "cells": [cell(c) for c in results.cells], "sweep": [cell(c) for c in results.sweep],
        "facts": {m: asdict(f) for m, f in results.facts.items()},
        "skipped": [{"model": m, "contender": n, "why": w}
                    for (m, n), w in results.skipped.items()],
        "targets": [asdict(t) for t in targets],
        "many_models": asdict(results.many) if results.many is not None else None,
    }, indent=1)
