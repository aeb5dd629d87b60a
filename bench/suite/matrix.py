"""One model's share of the run: its servers up, its contenders measured side by side.

Every server for the model stays up for the whole model (an idle one costs
nothing measurable), and each cell is split into ``rounds`` slots whose
contender order reverses every other round, so drift on a shared machine lands
on all contenders alike. A slot's warm-up grows to twice the latency seen in
the last slot of that contender, so that with long requests (ResNet50 at 32
clients) the closed loop is past its synchronized start before measuring.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import grpc
import numpy as np

from bench.suite import load, payloads, stages
from bench.suite.echo_server import PATH
from bench.suite.models import BenchModel
from bench.suite.plan import (
    BATCHING,
    ECHO,
    ORT,
    RUN_FLOOR,
    SERVING,
    SWEEP_MODEL,
    TARGET_MODEL,
    TF,
    Plan,
    variant_name,
)
from bench.suite.probes import Probe
from bench.suite.processes import Refused, ServerProcess
from bench.suite.results import Cell, ModelFacts, Results
from bench.suite.runners import Contender, GrpcContender, OrtContender, TensorFlowContender
from onnx_serving.server.runtime.threads import cores
from onnx_serving.tune.server import free_port

Log = Callable[[str], None]
MAX_WARMUP = 10.0


def start_serving(
    model: BenchModel, plan: Plan, folder: Path, label: str, extra: Sequence[str] = (),
    code: Path | None = None,
) -> tuple[ServerProcess, Probe]:
    """onnx-serving on ``model`` with the suite's flags plus ``extra`` (later flags win),
    from ``code`` where given (see ServerProcess); Refused if it will not start with them."""
    port, rest_port = free_port(), free_port()
    monitoring = folder / "monitoring.config"
    monitoring.write_text(stages.MONITORING_CONFIG)
    flags = [
        f"--port={port}", f"--rest_api_port={rest_port}",
        f"--model_name={model.name}", f"--model_base_path={model.onnx_base}",
        f"--monitoring_config_file={monitoring}",
    ]
    if plan.grpc_threads:
        flags.append(f"--grpc_max_threads={plan.grpc_threads}")
    # 0: no flag, the server's own choice (the default-flags targets need it so).
    if plan.intra_op_threads:
        flags.append(f"--tensorflow_intra_op_parallelism={plan.intra_op_threads}")
    if plan.inter_op_threads:
        flags.append(f"--tensorflow_inter_op_parallelism={plan.inter_op_threads}")
    if plan.ort_config:
        runtime = folder / "runtime.json"
        runtime.write_text(json.dumps({"session": {"config_entries": dict(plan.ort_config)}}))
        flags.append(f"--runtime_config_file={runtime}")
    process = ServerProcess("onnx_serving.server", ["serve", *flags, *extra], port,
                            label=f"{model.name}-{label}", code=code, rest_port=rest_port)
    try:
        process.wait_ready()
    except BaseException:
        process.stop()
        raise
    return process, Probe(server_pid=process.pid, metrics=(rest_port, model.name))


def start_echo(
    stack: ExitStack, folder: Path, label: str, response: bytes, threads: int,
    extra: Sequence[str] = (),
) -> ServerProcess:
    """bench/suite/echo_server.py answering ``response``, with ``extra`` flags (its
    steps towards a real server), stopped when ``stack`` closes."""
    response_file = folder / f"{label}-response.bin"
    response_file.write_bytes(response)
    port = free_port()
    process = stack.enter_context(ServerProcess(
        "bench.suite.echo_server",
        [f"--port={port}", f"--response={response_file}", f"--max_threads={threads}",
         *extra],
        port, label=label))
    process.wait_ready()
    return process


def batching_flags(plan: Plan, folder: Path) -> list[str]:
    parameters = folder / "batching.config"
    if not plan.batching_parameters:
        return ["--enable_batching"]
    parameters.write_text(plan.batching_parameters + "\n")
    return ["--enable_batching", f"--batching_parameters_file={parameters}"]


def run_model(model: BenchModel, plan: Plan, results: Results, log: Log) -> None:
    facts = results.facts.setdefault(model.name, ModelFacts())
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        folder = Path(tmp)
        log(f"{model.name}: starting onnx-serving")
        serving, serving_probe = start_serving(model, plan, folder, "serving")
        stack.callback(serving.stop)
        request = payloads.request_bytes(model)
        with grpc.insecure_channel(serving.address) as channel:
            response = channel.unary_unary(PATH)(request, timeout=600)
        facts.request_bytes, facts.response_bytes = len(request), len(response)
        facts.encode_ms, facts.decode_ms = payloads.client_costs(model, response)
        ort = OrtContender(model, plan.intra_op_threads, plan.inter_op_threads,
                           config=plan.ort_config)
        if not payloads.outputs_agree(response, ort.run()):
            facts.notes.append("onnx-serving's output differs from in-process ONNX Runtime's")

        contenders: dict[str, Contender] = {}
        probes: dict[str, Probe] = {}

        def add_grpc(name: str, address: str, probe: Probe) -> None:
            contenders[name] = GrpcContender(name, address, request, plan.channels)  # type: ignore[arg-type]
            probes[name] = probe

        if SERVING in plan.contenders:
            add_grpc(SERVING, serving.address, serving_probe)
        configurations = [(label, list(flags)) for label, flags in plan.variants]
        if BATCHING in plan.contenders:
            configurations.insert(0, ("", batching_flags(plan, folder)))
        for label, flags in configurations:
            name = variant_name(label) if label else BATCHING
            try:
                server, probe = start_serving(model, plan, folder, label or "batching", flags)
            except Refused as refused:
                results.skipped[(model.name, name)] = str(refused)
                log(f"{model.name}: {name} skipped: {refused}")
                continue
            stack.callback(server.stop)
            add_grpc(name, server.address, probe)
        threads = plan.grpc_threads or 4 * cores()
        if ECHO in plan.contenders:
            echo = start_echo(stack, folder, f"{model.name}-echo", response, threads)
            add_grpc(ECHO, echo.address, Probe(server_pid=echo.pid))
        if RUN_FLOOR in plan.contenders and model.name == TARGET_MODEL:
            (folder / "request.bin").write_bytes(request)
            floor = start_echo(stack, folder, f"{model.name}-floor", response, threads, [
                "--parse", f"--run={model.onnx_file}", f"--request={folder / 'request.bin'}"])
            add_grpc(RUN_FLOOR, floor.address, Probe(server_pid=floor.pid))
        if ORT in plan.contenders:
            contenders[ORT] = ort
        if TF in plan.contenders:
            log(f"{model.name}: loading the SavedModel in TensorFlow")
            tf = TensorFlowContender(model, plan.tf_intra_op_threads, plan.tf_inter_op_threads)
            facts.notes.append(_tf_agreement(tf, ort))
            contenders[TF] = tf

        for clients in plan.concurrency:
            results.cells += _run_cells(model.name, clients, contenders, probes, plan, log)
        if model.name == TARGET_MODEL and BATCHING in contenders and plan.target_clients:
            # The echo server too: no batching can beat the transport it runs over.
            trio = {n: contenders[n] for n in (SERVING, BATCHING, ECHO) if n in contenders}
            results.cells += _run_cells(model.name, plan.target_clients, trio, probes, plan,
                                        log)
        if model.name == SWEEP_MODEL and ORT in plan.contenders:
            _sweep(model, plan, results, log)


def _tf_agreement(tf: TensorFlowContender, ort: OrtContender) -> str:
    expected = [np.asarray(v) for _, v in sorted(tf.run().items())]
    got = ort.run()
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, got, strict=False))
    return f"TF and ONNX Runtime outputs differ by at most {worst:.2g}"


def _slot(
    contender: Contender, clients: int, seconds: float, warmup: float, probe: Probe | None,
) -> tuple[load.Sample, Probe]:
    probe = Probe(probe.server_pid, probe.metrics) if probe else Probe()
    callers = [contender.caller() for _ in range(clients)]
    try:
        sample = load.run(callers, seconds=seconds, warmup=warmup,
                          on_open=probe.read, on_close=probe.read)
    finally:
        contender.close()
    return sample, probe


def _run_cells(
    model: str, clients: int, contenders: dict[str, Contender], probes: dict[str, Probe],
    plan: Plan, log: Log, *, batches: dict[str, int] | None = None,
) -> list[Cell]:
    """One cell per contender, measured in interleaved slots; ``batches``: inputs per
    request of each contender, where not 1."""
    batches = batches or {}
    cells = {name: Cell(model, clients, name, batch=batches.get(name, 1)) for name in contenders}
    warmups = dict.fromkeys(contenders, plan.warmup)
    names = list(contenders)
    for round_ in range(plan.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            sample, probe = _slot(contenders[name], clients, plan.slot_seconds, warmups[name],
                                  probes.get(name))
            cells[name].add(sample, *probe.per_request(sample.count))
            if sample.count:
                warmups[name] = min(max(plan.warmup, 2 * sample.percentile_ms(50) / 1000),
                                    MAX_WARMUP)
    for name, cell in cells.items():
        s = cell.sample
        log(f"{model} x{clients} {name}: p50 {s.percentile_ms(50):.2f} ms, "
            f"p99 {s.percentile_ms(99):.2f} ms, {cell.items_per_second:.1f} items/s"
            + (f", {s.errors} errors ({s.first_error})" if s.errors else ""))
    return list(cells.values())


def _sweep(model: BenchModel, plan: Plan, results: Results, log: Log) -> None:
    """ONNX Runtime's best throughput at any batch size (one caller): the batching
    target's limit. Batch sizes are interleaved like any other contenders."""
    contenders: dict[str, Contender] = {}
    batches = {}
    for batch in plan.sweep_batches:
        contender = OrtContender(model, plan.intra_op_threads, plan.inter_op_threads, batch,
                                 config=plan.ort_config)
        contenders[contender.name] = contender
        batches[contender.name] = batch
    results.sweep += _run_cells(model.name, 1, contenders, {}, plan, log, batches=batches)
