"""``onnx-serving tune``: the command line. Prints the table; writes the reports and the
best setting's runtime.json (and batching parameters) into --output_dir."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from onnx_serving.server.runtime.config import LEVELS
from onnx_serving.server.runtime.threads import cores
from onnx_serving.tune import load, report
from onnx_serving.tune.report import Row
from onnx_serving.tune.server import Server
from onnx_serving.tune.settings import Setting, grid, parse_batching

log = logging.getLogger("onnx_serving.tune")
T = TypeVar("T")
RUNNING = "running server"


def _values(parse: Callable[[str], T]) -> Callable[[str], list[T | None]]:
    """A comma-separated list; ``auto`` leaves that knob to the server."""
    def values(text: str) -> list[T | None]:
        return [None if v.strip() == "auto" else parse(v.strip()) for v in text.split(",") if v]
    return values


def _spinning(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError("spinning is on, off or auto")
    return text == "on"


def _level(text: str) -> str:
    if text not in LEVELS:
        raise ValueError(f"graph_optimization_level is one of {list(LEVELS)}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnx-serving tune",
        description="Measure a model under a load over server settings; write the best as its "
                    "runtime.json. Lists take comma-separated values; 'auto' is the server's "
                    "own choice.")
    p.add_argument("--model_base_path", help="the model's repository folder (version folders "
                   "inside); each setting is served from it in a server of its own")
    p.add_argument("--model_name", help="default: the base path's folder name")
    p.add_argument("--server", help="HOST:PORT of a running server to measure as it is, "
                   "beside the settings (needs --model_name)")
    p.add_argument("--signature_name", default="")
    p.add_argument("--clients", type=int, default=8, help="requests in flight (closed loop)")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per setting")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="unmeasured seconds before each measurement")
    p.add_argument("--rounds", type=int, default=2, help="measurements per setting, "
                   "interleaved with the others' (--duration is split among them)")
    p.add_argument("--requests", type=Path, help="a TFRecord file of PredictionLogs (TF "
                   "Serving's warmup file or a request log); default: generated from the "
                   "signature")
    p.add_argument("--batch", type=int, default=1, help="rows per generated request")
    p.add_argument("--instances", type=_values(int), default=[None, 1, 2])
    p.add_argument("--intra_op_threads", type=_values(int), default=[None])
    p.add_argument("--inter_op_threads", type=_values(int), default=[None])
    p.add_argument("--spinning", type=_values(_spinning), default=[None])
    p.add_argument("--graph_optimization_level", type=_values(_level), default=[None])
    p.add_argument("--batching", action="append", metavar="none|KEY=VALUE,...",
                   help="a batching setting (repeatable), e.g. 'max_batch_size=8,"
                   "batch_timeout_micros=1000,num_batch_threads=2'; default: none")
    p.add_argument("--latency_budget_ms", type=float,
                   help="the best setting's p99 must be within it")
    p.add_argument("--output_dir", type=Path, help="default: ./tune-MODEL")
    p.add_argument("--apply", action="store_true", help="also write runtime.json into "
                   "--model_base_path (and batching_params.pbtxt into each version folder)")
    p.add_argument("--server_flags", default="", help="more flags for every server started")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    if not args.model_base_path and not args.server:
        parser().error("give --model_base_path, --server, or both")
    base = Path(args.model_base_path).resolve() if args.model_base_path else None
    model = args.model_name or (base.name if base else None)
    if not model:
        parser().error("--server needs --model_name")
    try:
        batching = [parse_batching(b) for b in (args.batching or ["none"])]
    except ValueError as exc:
        parser().error(str(exc))
    cpus = cores()
    settings = grid(args.instances, args.intra_op_threads, args.inter_op_threads,
                    args.spinning, args.graph_optimization_level, batching,
                    cpus) if base else []
    for setting in settings:
        busy = setting.busy_threads(cpus)
        if busy > cpus:
            log.warning("%s keeps %d threads busy on %d core(s): oversubscribed",
                        setting.label, busy, cpus)
    output = args.output_dir or Path(f"tune-{model}")

    requests: dict[str, list[bytes]] = {}

    def measure(address: str, seconds: float) -> load.Result:
        if address not in requests:
            requests[address] = (
                load.from_file(args.requests, model) if args.requests
                else load.generated(address, model, args.signature_name, args.batch))
        return load.run(address, requests[address], args.clients, seconds, args.warmup)

    # Every server stays up and each round measures all of them, in an order reversed
    # every other round, so that drift on a shared machine lands on every setting alike.
    targets = [(RUNNING, Setting(), args.server)] if args.server else []
    results = {label: load.Result() for label, _, _ in targets}
    slot = args.duration / args.rounds
    with ExitStack() as stack, tqdm(total=len(settings) + args.rounds * (
            len(settings) + len(targets)), unit="step", file=sys.stderr) as progress:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onnx-serving-tune-")))
        for index, setting in enumerate(settings):
            progress.set_description(f"starting {setting.label}")
            flags = [f"--model_name={model}", f"--model_base_path={base}",
                     *setting.server_flags(tmp / str(index)), *args.server_flags.split()]
            server = stack.enter_context(Server(flags, model))
            targets.append((setting.label, setting, server.address))
            results[setting.label] = load.Result()
            progress.update()
        for round_ in range(args.rounds):
            for label, _, address in targets if round_ % 2 == 0 else targets[::-1]:
                progress.set_description(f"round {round_ + 1}/{args.rounds}: {label}")
                results[label].add(measure(address, slot))
                progress.set_postfix(req_s=f"{results[label].throughput:.1f}",
                                     p99_ms=f"{results[label].percentile_ms(99):.1f}")
                progress.update()
    rows = [Row.of(setting, results[label], cpus, label=label)
            for label, setting, _ in targets]
    chosen = report.best([r for r in rows if r.label != RUNNING], args.latency_budget_ms)
    about = [
        f"model {model}" + (f" from {base}" if base else "") + f"; {cpus} core(s) "
        f"(load average {os.getloadavg()[0]:.2f} at the end)",
        f"load: {args.clients} client(s) in a closed loop, {args.duration:g} s measured per "
        f"setting in {args.rounds} interleaved round(s), each after {args.warmup:g} s of "
        "warm-up; requests "
        + (str(args.requests) if args.requests else f"generated (batch {args.batch})"),
        "best: " + (chosen.label if chosen else "none")
        + (f" (p99 budget {args.latency_budget_ms:g} ms)" if args.latency_budget_ms else ""),
    ]
    files = report.write(output, rows, chosen, f"onnx-serving tune: {model}",
                         args.latency_budget_ms, about)
    print(report.table(rows, chosen))
    for line in about:
        print(f"- {line}")
    for kind, path in files.items():
        print(f"{kind}: {path}")
    if not settings:  # a running server measured as it is: nothing to choose from
        return 0
    if chosen is None:
        print("no setting met the latency budget without errors", file=sys.stderr)
        return 2
    if args.apply and base is not None:
        _apply(base, chosen)
    return 0


def _apply(base: Path, chosen: Row) -> None:
    target = base / "runtime.json"
    target.write_text(json.dumps(chosen.setting.runtime_json(), indent=2) + "\n")
    print(f"applied: {target}")
    if chosen.setting.batching:
        for version in sorted(p for p in base.iterdir() if p.is_dir() and p.name.isdigit()):
            (version / "batching_params.pbtxt").write_text(chosen.setting.batching_text())
            print(f"applied: {version / 'batching_params.pbtxt'} (serve with --enable_batching "
                  "--enable_per_model_batching_parameters)")
