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


def _rounds(text: str) -> int:
    rounds = int(text)
    if rounds < 2:
        raise argparse.ArgumentTypeError("at least 2: the spread between rounds is what a "
                                         "setting must beat the default by")
    return rounds


class Progress:
    """tqdm's bar on a terminal; elsewhere (a log file, CI) a plain log line per step,
    since a bar redrawn with carriage returns is unreadable there."""

    def __init__(self, total: int) -> None:
        self._bar = tqdm(total=total, unit="step", file=sys.stderr,
                         disable=not sys.stderr.isatty())
        self._total, self._done = total, 0

    def step(self, what: str, outcome: str = "") -> None:
        self._done += 1
        if self._bar.disable:
            log.info("[%d/%d] %s%s", self._done, self._total, what,
                     f": {outcome}" if outcome else "")
        else:
            self._bar.set_description(what)
            self._bar.set_postfix_str(outcome)
            self._bar.update()

    def close(self) -> None:
        self._bar.close()


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
    p.add_argument("--rounds", type=_rounds, default=3, help="measurements per setting, "
                   "interleaved with the others' (--duration is split among them); a "
                   "setting replaces the default only if its slowest round beats the "
                   "default's fastest (at least 2)")
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
        if setting.threads(cpus).oversubscribes(cpus):
            log.warning("%s keeps %d threads busy on %d core(s): oversubscribed",
                        setting.label, setting.busy_threads(cpus), cpus)
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
    rounds: dict[str, list[load.Result]] = {label: [] for label, _, _ in targets}
    slot = args.duration / args.rounds
    progress = Progress(len(settings) + args.rounds * (len(settings) + len(targets)))
    with ExitStack() as stack:
        stack.callback(progress.close)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onnx-serving-tune-")))
        for index, setting in enumerate(settings):
            flags = [f"--model_name={model}", f"--model_base_path={base}",
                     *setting.server_flags(tmp / str(index)), *args.server_flags.split()]
            server = stack.enter_context(Server(flags, model))
            targets.append((setting.label, setting, server.address))
            rounds[setting.label] = []
            progress.step(f"started {setting.label}")
        for round_ in range(args.rounds):
            for label, _, address in targets if round_ % 2 == 0 else targets[::-1]:
                result = measure(address, slot)
                rounds[label].append(result)
                progress.step(f"round {round_ + 1}/{args.rounds}: {label}",
                              f"{result.throughput:.1f} req/s, p99 "
                              f"{result.percentile_ms(99):.1f} ms")
    rows = [Row.of(setting, rounds[label], cpus, label=label)
            for label, setting, _ in targets]
    choice = (report.choose([r for r in rows if r.label != RUNNING], args.latency_budget_ms)
              if settings else report.Choice(None, None, "a running server measured as it "
                                             "is: nothing to choose from"))
    about = [
        f"model {model}" + (f" from {base}" if base else "") + f"; {cpus} core(s) "
        f"(load average {os.getloadavg()[0]:.2f} at the end)",
        f"load: {args.clients} client(s) in a closed loop, {args.duration:g} s measured per "
        f"setting in {args.rounds} interleaved round(s), each after {args.warmup:g} s of "
        "warm-up; requests "
        + (str(args.requests) if args.requests else f"generated (batch {args.batch})"),
        "best: " + (choice.row.label if choice.row else "none") + f" ({choice.reason})"
        + (f"; p99 budget {args.latency_budget_ms:g} ms" if args.latency_budget_ms else ""),
    ]
    files = report.write(output, rows, choice, f"onnx-serving tune: {model}",
                         args.latency_budget_ms, about)
    print(report.table(rows, choice))
    for line in about:
        print(f"- {line}")
    for kind, path in files.items():
        print(f"{kind}: {path}")
    if not settings:  # a running server measured as it is: nothing to choose from
        return 0
    return conclude(choice, base if args.apply else None)


def conclude(choice: report.Choice, apply_to: Path | None) -> int:
    """Applies the choice to the model's folder ``apply_to`` (if given), or says why not;
    the exit status: 2 when no setting fits."""
    if choice.row is None:
        print(choice.reason, file=sys.stderr)
        return 2
    if apply_to is not None:
        if choice.keeps_default:
            print(f"nothing applied: {choice.reason}")
        else:
            _apply(apply_to, choice.row)
    return 0


def _apply(base: Path, chosen: Row) -> None:
    """Writes the setting's files into the model's folder, each replaced at once (written
    beside, then renamed), so a server loading a version meanwhile reads old or new."""
    def write(path: Path, text: str) -> None:
        partial = path.with_name(f".{path.name}.tune")
        partial.write_text(text)
        os.replace(partial, path)
        print(f"applied: {path}")

    write(base / "runtime.json", json.dumps(chosen.setting.runtime_json(), indent=2) + "\n")
    if chosen.setting.batching:
        for version in sorted(p for p in base.iterdir() if p.is_dir() and p.name.isdigit()):
            write(version / "batching_params.pbtxt", chosen.setting.batching_text())
        print("serve with --enable_batching --enable_per_model_batching_parameters to "
              "use batching_params.pbtxt")
