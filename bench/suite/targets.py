"""The performance targets, judged from one run's results, each with the figures behind it.

1. Predict's latency overhead over in-process ONNX Runtime (p50, one client) is at
   most 1.1x the echo server's round trip for the same payload.
2. With its default flags, the server's throughput on MobileNetV2 at 16 requests in
   flight is at least 1.0x in-process ONNX Runtime's best with its default session
   (any batch size of the sweep, any number of callers), and its p50 at one client at
   most 1.1x in-process ONNX Runtime's default session (a lone request on every core) ...
3. ... and at least 2x TensorFlow's in-process throughput (at its own thread defaults).
4. With batching, saturation throughput on MobileNetV2 is at least 0.9x in-process
   ONNX Runtime's best throughput at any batch size.
5. On half_plus_two at 64 clients, batching gives at least 3x the throughput of none.
6. Small requests (half_plus_two) at 16 and 64 clients: at least 0.8x the echo
   server's throughput, with the server's CPU per request at most 1.5x the echo's
   (a missed one says what the floor contender, a server that only parses, runs the
   model and answers, reached).
7. Many models on one server: threads bounded, RSS within 1.1x of the same sessions
   created alone, a model's p99 while another swaps within 2x of its steady p99, and
   the swapping model's own p99 (swap while serving) without errors.

A target whose contender could not run (batching refused by the server, say) is
"not measured", with the reason, never "met"; one whose figures disagree beyond
the machine's noise is "inconclusive", with both figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.suite.many import ManyModels
from bench.suite.plan import (
    BATCHING,
    ECHO,
    FLAGS_CLIENTS,
    ORT,
    RUN_FLOOR,
    SERVING,
    SWEEP_MODEL,
    TARGET_MODEL,
    TF,
    Plan,
)
from bench.suite.results import Cell, Results
from bench.suite.stages import HANDLER

MET, MISSED, NOT_MEASURED = "met", "MISSED", "not measured"
INCONCLUSIVE = "inconclusive (noise)"
# Each limit, once: the targets' names say them and their verdicts apply them.
OVERHEAD_LIMIT = 1.1  # Predict's overhead over ORT, in echo round trips (1 client)
LONE_LIMIT = 1.1  # MobileNetV2's p50 at 1 client, in ORT's default session's
DEFAULT_FLAGS_LIMIT = 1.0  # MobileNetV2 at 16 in flight, in ORT's best throughputs
SMALL_RATE, SMALL_CPU = 0.8, 1.5  # half_plus_two at 16+ clients: echo's rate, its CPU


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    status: str
    why: str = ""


def judge(results: Results, plan: Plan) -> list[Target]:
    targets = [t for t in (_overhead(results, m) for m in plan.models) if t is not None]
    if TARGET_MODEL in plan.models:
        targets += _small_requests(results, plan)
    if SWEEP_MODEL in plan.models:
        targets += _default_flags(results, plan)
        targets += _lone_request(results)
        targets += _saturation(results)
    if TARGET_MODEL in plan.models and plan.target_clients:
        targets.append(_batching_gain(results, plan.target_clients))
    if results.many is not None:
        targets += _many(results.many)
    return targets


def _default_flags(results: Results, plan: Plan) -> list[Target]:
    """The server as it starts with no tuning flags, at FLAGS_CLIENTS in flight, against
    in-process ONNX Runtime's default session at its best (any batch, any callers) and
    TensorFlow at its own thread defaults."""
    model, clients = SWEEP_MODEL, FLAGS_CLIENTS
    name_ort = (f"{model}: default flags at {clients} in flight >= {DEFAULT_FLAGS_LIMIT}x ORT's "
                f"best default session (batch {','.join(map(str, plan.sweep_batches))})")
    name_tf = f"{model}: default flags at {clients} in flight >= 2x TF in-process"
    server = results.cell(model, clients, SERVING)
    limit = _best(results.sweep + results.cells_of(model, ORT))
    tf = _best(results.cells_of(model, TF))
    if plan.intra_op_threads or plan.inter_op_threads or plan.grpc_threads:
        why = "the server was given thread flags (--intra_op_threads, --grpc_threads)"
        return [Target(name_ort, "-", NOT_MEASURED, why), Target(name_tf, "-", NOT_MEASURED, why)]
    targets = []
    if server is None or limit is None:
        targets.append(Target(name_ort, "-", NOT_MEASURED,
                              f"needs onnx-serving and ORT at {clients} clients"))
    else:
        ratio = server.items_per_second / limit.items_per_second
        measured = (f"{server.items_per_second:.1f}/s vs ORT {limit.items_per_second:.1f}/s "
                    f"({limit.contender}, x{limit.clients}): {ratio:.2f}x")
        met = ratio >= DEFAULT_FLAGS_LIMIT
        why = "" if met else _cpu_reason(results, server, limit)
        targets.append(Target(name_ort, measured, MET if met else MISSED, why))
    if server is None or tf is None:
        targets.append(Target(name_tf, "-", NOT_MEASURED, "needs onnx-serving and TF"))
    else:
        ratio = server.items_per_second / tf.items_per_second
        measured = (f"{server.items_per_second:.1f}/s vs TF {tf.items_per_second:.1f}/s "
                    f"(x{tf.clients}): {ratio:.2f}x")
        why = ""
        if ratio < 2 and limit is not None:
            ort_vs_tf = limit.items_per_second / tf.items_per_second
            why = (f"ONNX Runtime in-process at its best is {ort_vs_tf:.2f}x TF; the server "
                   f"keeps {server.items_per_second / limit.items_per_second:.2f}x of it: "
                   + _cpu_reason(results, server, limit))
        targets.append(Target(name_tf, measured, MET if ratio >= 2 else MISSED, why))
    return targets


def _many(found: ManyModels) -> list[Target]:
    n = found.models
    grown = found.threads_all - found.threads_one
    pools = found.pool_threads_all * (n - 1) // n  # the further models' pools
    a_steady, a_swap, _, a_errors = found.bystander
    b_steady, b_swap, b_count, b_errors = found.swapping
    return [
        Target(f"{n} models: threads bounded (beyond one model's, only each further "
               "model's intra-op pool: cores - 1 threads, idle, not spinning)",
               f"{found.threads_one} threads with 1 model, {found.threads_all} with {n}; "
               f"the pools {pools}",
               MET if grown <= pools + 2 else MISSED,
               "" if grown <= pools + 2 else f"{grown - pools} threads beyond the pools"),
        Target(f"{n} models: RSS <= 1.1x the same sessions created alone",
               f"growth 1 -> {n} models: server "
               f"{found.rss_server_all_mib - found.rss_server_one_mib:.0f} MiB, alone "
               f"{found.rss_alone_all_mib - found.rss_alone_one_mib:.0f} MiB: "
               f"{found.rss_ratio:.2f}x",
               MET if found.rss_ratio <= 1.1 else MISSED),
        Target(f"{n} models: a model's p99 while another loads and swaps <= 2x steady",
               f"{a_steady:.1f} ms steady, {a_swap:.1f} ms during {found.swaps} swaps: "
               f"{a_swap / a_steady:.2f}x; {a_errors} errors",
               MET if a_swap <= 2 * a_steady and not a_errors else MISSED),
        Target(f"{n} models: swap-while-serving p99 of the swapping model (no errors)",
               f"{b_steady:.1f} ms steady, {b_swap:.1f} ms over {b_count} requests during its "
               f"swaps: {b_swap / b_steady:.2f}x; {b_errors} errors",
               MET if b_swap <= 2 * b_steady and not b_errors else MISSED),
    ]


def _small_requests(results: Results, plan: Plan) -> list[Target]:
    """Throughput and the server's CPU per request against the echo server's, at each
    load of 16 clients or more: what the server's own code costs beyond gRPC's."""
    model, targets = TARGET_MODEL, []
    for clients in (c for c in plan.concurrency if c >= 16):
        serving, echo = (results.cell(model, clients, n) for n in (SERVING, ECHO))
        name = (f"{model}: at {clients} clients >= {SMALL_RATE}x the echo's throughput, server "
                f"CPU per request <= {SMALL_CPU}x the echo's")
        if serving is None or echo is None:
            targets.append(Target(name, "-", NOT_MEASURED, "needs onnx-serving and the echo"))
            continue
        rate = serving.sample.throughput / echo.sample.throughput
        measured = (f"{serving.sample.throughput:.0f} vs {echo.sample.throughput:.0f} req/s: "
                    f"{rate:.2f}x")
        cpu = None
        if serving.server_cpu_ms is not None and echo.server_cpu_ms:
            cpu = serving.server_cpu_ms / echo.server_cpu_ms
            measured += (f"; CPU {serving.server_cpu_ms:.3f} vs {echo.server_cpu_ms:.3f} ms: "
                         f"{cpu:.2f}x")
        met = rate >= SMALL_RATE and cpu is not None and cpu <= SMALL_CPU
        why = "" if met else (
            _run_floor(results, model, clients, echo)
            + "the server's Python beyond gRPC's per request (bench/handler_profile.py) and "
            "gRPC's own machinery, slower beside it (bench/profile_server.py): "
            + _saturation_reason(serving))
        targets.append(Target(name, measured, MET if met else MISSED, why))
    return targets


def _run_floor(results: Results, model: str, clients: int, echo: Cell) -> str:
    """What a server that only parses, runs the model and answers reaches, when measured."""
    floor = results.cell(model, clients, RUN_FLOOR)
    if floor is None:
        return ""
    text = (f"a server that only parses, runs the model and answers (bench/floor.py) does "
            f"{floor.sample.throughput / echo.sample.throughput:.2f}x the echo's throughput")
    if floor.server_cpu_ms is not None and echo.server_cpu_ms:
        text += f" at {floor.server_cpu_ms / echo.server_cpu_ms:.2f}x its CPU"
    return text + "; beyond it, "


def _lone_request(results: Results) -> list[Target]:
    model = SWEEP_MODEL
    name = f"{model}: p50 at 1 client <= {LONE_LIMIT}x ORT's default session in-process"
    serving, ort, echo = (results.cell(model, 1, n) for n in (SERVING, ORT, ECHO))
    if serving is None or ort is None:
        return [Target(name, "-", NOT_MEASURED, "needs onnx-serving and ORT at 1 client")]
    p50, ort_p50 = serving.sample.percentile_ms(50), ort.sample.percentile_ms(50)
    ratio = p50 / ort_p50
    measured = f"{p50:.2f} vs {ort_p50:.2f} ms: {ratio:.2f}x"
    if ratio <= LONE_LIMIT:
        return [Target(name, measured, MET)]
    why = _saturation_reason(serving)
    if echo is not None:
        why = (f"the same bytes' round trip alone (echo) takes {echo.sample.percentile_ms(50):.2f}"
               f" ms p50; " + why)
    return [Target(name, measured, MISSED, why)]


def _best(cells: list[Cell]) -> Cell | None:
    return max(cells, key=lambda c: c.items_per_second, default=None)


def _overhead(results: Results, model: str) -> Target | None:
    """Judged side by side (p50 against p50, as the target reads), and checked against a
    paired figure from the same requests: the round trip minus the server's own run time.
    When the model's run time drifts between slots by more than the overhead, the two
    disagree, and the verdict says so rather than pick one."""
    name = (f"{model}: Predict overhead over ORT <= {OVERHEAD_LIMIT}x echo round trip "
            "(p50, 1 client)")
    serving, ort, echo = (results.cell(model, 1, n) for n in (SERVING, ORT, ECHO))
    if not (serving and ort and echo):
        return None
    overhead = serving.sample.percentile_ms(50) - ort.sample.percentile_ms(50)
    floor = echo.sample.percentile_ms(50)
    ratio = overhead / floor
    measured = f"side by side: {overhead:.2f} ms over ORT vs echo {floor:.2f} ms = {ratio:.2f}x"
    met = ratio <= OVERHEAD_LIMIT
    run = serving.stages.get("run")
    if run is None:
        return Target(name, measured, MET if met else MISSED,
                      "" if met else _overhead_reason(serving, ort, echo))
    paired = serving.sample.mean_ms - run
    paired_ratio = paired / echo.sample.mean_ms
    measured += (f"; paired: round trip - server's run = {paired:.2f} ms vs echo "
                 f"{echo.sample.mean_ms:.2f} ms = {paired_ratio:.2f}x (means)")
    if met != (paired_ratio <= OVERHEAD_LIMIT):
        return Target(name, measured, INCONCLUSIVE,
                      "the two figures disagree: the model's run time varied between slots by "
                      "more than the overhead; " + _overhead_reason(serving, ort, echo))
    return Target(name, measured, MET if met else MISSED,
                  "" if met else _overhead_reason(serving, ort, echo))


def _overhead_reason(serving: Cell, ort: Cell, echo: Cell) -> str:
    """Splits the round trip with the server's own timings, so the miss names its cause."""
    s = serving.stages
    if HANDLER not in s:
        return "no server-side timings to split the round trip"
    outside = serving.sample.mean_ms - s[HANDLER]
    stages = {k: v for k, v in s.items() if k in ("decode", "encode")}
    other = s[HANDLER] - s.get("run", 0.0) - sum(stages.values())
    parts = [
        f"outside the handler (gRPC, protobuf, client) {outside:.2f} ms vs the whole echo "
        f"round trip {echo.sample.mean_ms:.2f}",
        "in the handler beyond the run " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
        + f", other {other:.2f}",
        f"run in the server {s.get('run', 0.0):.2f} ms vs in-process {ort.sample.mean_ms:.2f}",
    ]
    if serving.server_cpu_ms is not None and echo.server_cpu_ms is not None:
        parts.append(f"server CPU per request {serving.server_cpu_ms:.2f} ms vs echo server "
                     f"{echo.server_cpu_ms:.2f} + ORT in-process {ort.client_cpu_ms:.2f}")
    return "; ".join(parts) + " (means, ms)"


def _saturation(results: Results) -> list[Target]:
    model = SWEEP_MODEL
    limit = _best(results.sweep + results.cells_of(model, ORT))
    batching = _best(results.cells_of(model, BATCHING))
    plain = _best(results.cells_of(model, SERVING))
    skipped = results.skipped.get((model, BATCHING), "")
    targets = []
    name = f"{model}: batching saturation >= 0.9x ORT's best at any batch size"
    if limit is None:
        targets.append(Target(name, "no ORT figures", NOT_MEASURED))
    elif batching is None:
        info = f"(without batching: {plain.items_per_second / limit.items_per_second:.2f}x)" \
            if plain else ""
        targets.append(Target(name, f"ORT best {limit.items_per_second:.1f}/s {info}",
                              NOT_MEASURED, skipped or "batching contender not run"))
    else:
        ratio = batching.items_per_second / limit.items_per_second
        where = limit.contender if limit in results.sweep else \
            f"{limit.contender}, batch {limit.batch}"  # a sweep's contender names its batch
        measured = (f"{batching.items_per_second:.1f}/s (x{batching.clients}) vs ORT "
                    f"{limit.items_per_second:.1f}/s ({where}, x{limit.clients}): {ratio:.2f}x")
        why = "" if ratio >= 0.9 else _cpu_reason(results, batching, limit)
        targets.append(Target(name, measured, MET if ratio >= 0.9 else MISSED, why))

    return targets


def _cpu_reason(results: Results, cell: Cell, limit: Cell) -> str:
    """At saturation throughput is cores / CPU per item: compares the server's CPU per
    request (plus the client's, on the same cores) with ONNX Runtime's own per item."""
    cores = os.cpu_count() or 1
    ort_item = limit.client_cpu_ms / limit.batch
    if cell.server_cpu_ms is None or not ort_item:
        return _saturation_reason(cell)
    spent = cell.server_cpu_ms + cell.client_cpu_ms
    text = (f"CPU-bound: each request costs {cell.server_cpu_ms:.2f} ms of server CPU + "
            f"{cell.client_cpu_ms:.2f} ms of client CPU on the same {cores} cores, at most "
            f"{cores * 1000 / spent:.0f}/s, against {ort_item:.2f} ms per item in-process "
            f"({cores * 1000 / ort_item:.0f}/s)")
    echo = results.cell(cell.model, cell.clients, ECHO)
    if echo is not None and echo.server_cpu_ms is not None:
        text += (f"; the transport alone (echo: server {echo.server_cpu_ms:.2f} + client "
                 f"{echo.client_cpu_ms:.2f} ms) caps it at "
                 f"{ort_item / (ort_item + echo.server_cpu_ms + echo.client_cpu_ms):.2f}x of "
                 "in-process ORT")
    if cell.stages:
        text += "; server means (ms): " + ", ".join(f"{k} {v:.2f}"
                                                   for k, v in cell.stages.items())
    return text


def _saturation_reason(cell: Cell) -> str:
    parts = [f"CPU per request: client {cell.client_cpu_ms:.2f} ms"]
    if cell.server_cpu_ms is not None:
        parts.append(f"server {cell.server_cpu_ms:.2f} ms")
    if cell.stages:
        parts.append("server means (ms): " + ", ".join(f"{k} {v:.2f}"
                                                      for k, v in cell.stages.items()))
    return "; ".join(parts)


def _batching_gain(results: Results, clients: int) -> Target:
    model = TARGET_MODEL
    name = f"{model}: batching >= 3x no batching at {clients} clients"
    plain = results.cell(model, clients, SERVING)
    batching = results.cell(model, clients, BATCHING)
    if batching is None or plain is None:
        reason = results.skipped.get((model, BATCHING), "batching contender not run")
        measured = f"no batching: {plain.sample.throughput:.1f}/s" if plain else "-"
        return Target(name, measured, NOT_MEASURED, reason)
    ratio = batching.sample.throughput / plain.sample.throughput
    measured = (f"{batching.sample.throughput:.1f}/s vs {plain.sample.throughput:.1f}/s: "
                f"{ratio:.2f}x")
    if ratio >= 3:
        return Target(name, measured, MET)
    why = []
    echo = results.cell(model, clients, ECHO)
    if echo is not None:
        ceiling = echo.sample.throughput / plain.sample.throughput
        why.append(f"the echo server, with no model at all, does {echo.sample.throughput:.0f}/s "
                   f"at {clients} clients, {ceiling:.2f}x the unbatched server: the ceiling "
                   "for any batching over this transport and client")
    why.append(_saturation_reason(batching))
    return Target(name, measured, MISSED, "; ".join(why))
