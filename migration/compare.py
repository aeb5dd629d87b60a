"""`onnx-serving compare`: do two TF Serving-API endpoints answer alike, and how fast?

The same requests go to a baseline (TF Serving, say, or a SavedModel run in-process)
and a candidate (onnx-serving), through the public gRPC API only. Every output is
checked for agreement, then latency is measured for both sides in one run, in
alternating phases (A B B A ...) so that machine noise hits both alike. The report
(Markdown or HTML, a latency plot, and JSON for CI gates) is written by
:mod:`.compare_report`; requests and sides are :mod:`.compare_requests`'s.

    python -m onnx_serving.migration.compare --baseline=HOST:PORT --candidate=HOST:PORT \\
        --model_name=NAME

Exit status: 0 when every output agrees, 1 when any does not, 2 when the comparison
could not run (bad arguments, an endpoint or model that cannot be reached).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from onnx_serving.codec.served_model import DEFAULT_SIGNATURE
from onnx_serving.migration.compare_agreement import Agreement, Tolerance, compare_outputs
from onnx_serving.migration.compare_latency import (
    LatencyPlan,
    Phase,
    latency_summary,
    measure_latency,
)
from onnx_serving.migration.compare_report import write_report
from onnx_serving.migration.compare_requests import (
    SIDES,
    GrpcSide,
    RequestError,
    RequestSet,
    SavedModelSide,
    Side,
    SideError,
    Target,
    generate_requests,
    read_requests,
)
from onnx_serving.migration.saved_model import quiet_cuda_probe

PROG = "onnx-serving compare"
EXIT_AGREE, EXIT_DISAGREE, EXIT_ERROR = 0, 1, 2
DEFAULT_GENERATED = 16


# --- command line -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Replay the same requests to two TF Serving-API endpoints; check that "
        "every output agrees and measure both sides' latency in one run.",
        epilog="Exit status: 0 every output agrees, 1 some output or request does not, "
        "2 the comparison could not run.",
    )
    sides = parser.add_argument_group("sides")
    sides.add_argument("--baseline", metavar="HOST:PORT", help="the reference, e.g. TF Serving")
    sides.add_argument(
        "--baseline_saved_model",
        metavar="PATH",
        help="instead of --baseline: run this SavedModel (or a base path's highest version) "
        "in TensorFlow in this process",
    )
    sides.add_argument("--candidate", metavar="HOST:PORT", required=True,
                       help="the endpoint on trial, e.g. onnx-serving")
    sides.add_argument("--model_name", metavar="NAME", help="the model on both sides")
    sides.add_argument("--signature_name", metavar="NAME", default=DEFAULT_SIGNATURE,
                       help=f"default: {DEFAULT_SIGNATURE}")
    for side in SIDES:
        sides.add_argument(f"--{side}_model_name", metavar="NAME", help="default: --model_name")
        which = sides.add_mutually_exclusive_group()
        which.add_argument(f"--{side}_version", metavar="N", type=int, help="default: the latest")
        which.add_argument(f"--{side}_label", metavar="LABEL", help="instead of a version")
    sides.add_argument("--timeout_seconds", metavar="S", type=_positive(float), default=30.0,
                       help="deadline of each RPC (default 30)")

    requests = parser.add_argument_group("requests")
    requests.add_argument(
        "--requests",
        metavar="PATH",
        help="a TFRecord of PredictionLog (a warmup file or request log), or an .npz of inputs "
        "by alias, optionally stacking requests on a leading axis; default: generated from "
        "the baseline's metadata",
    )
    requests.add_argument(
        "--num_requests",
        metavar="N",
        type=_positive(int),
        help=f"requests to generate (default {DEFAULT_GENERATED}), or the most to read "
        "from --requests (default all)",
    )
    requests.add_argument("--batch_size", metavar="N", type=_positive(int), default=1,
                          help="generated: the size of unknown leading dims (default 1)")
    requests.add_argument("--seed", metavar="N", type=int, default=0,
                          help="generated: random seed (default 0)")

    agreement = parser.add_argument_group("agreement")
    agreement.add_argument("--atol", metavar="X", type=_non_negative(float), default=Tolerance.atol,
                           help=f"absolute tolerance (default {Tolerance.atol:g})")
    agreement.add_argument("--rtol", metavar="X", type=_non_negative(float), default=Tolerance.rtol,
                           help=f"relative tolerance (default {Tolerance.rtol:g})")
    agreement.add_argument(
        "--top_k",
        metavar="K",
        type=_non_negative(int),
        default=0,
        help="judge 2-D float outputs wider than K as class scores: each row's top-K "
        "indices must agree (errors are still reported); 0, the default, is off",
    )
    agreement.add_argument("--top_k_outputs", metavar="ALIAS,...", default="",
                           help="only these outputs are class scores (default: all that fit)")

    latency = parser.add_argument_group("latency")
    latency.add_argument("--concurrency", metavar="N", type=_positive(int), default=1,
                         help="requests in flight per side (default 1)")
    latency.add_argument("--rounds", metavar="N", type=_non_negative(int), default=2,
                         help="A B rounds, alternating who goes first (default 2: A B B A); "
                         "0 skips latency")
    latency.add_argument("--duration_seconds", metavar="S", type=_positive(float), default=5.0,
                         help="each side's phase per round (default 5)")
    latency.add_argument("--iterations", metavar="N", type=_positive(int),
                         help="instead of --duration_seconds: requests per side per round")

    report = parser.add_argument_group("report")
    report.add_argument("--report_dir", metavar="DIR", default="compare_report",
                        help="default: compare_report")
    report.add_argument("--format", choices=("md", "html"), default="md",
                        help="Markdown (default) or a self-contained HTML page")
    return parser


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its errors
    return parse


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.baseline is None) == (args.baseline_saved_model is None):
        parser.error("give exactly one of --baseline and --baseline_saved_model")
    if args.baseline_saved_model and (args.baseline_version is not None or args.baseline_label):
        parser.error("--baseline_version and --baseline_label need --baseline")
    needed = ["candidate"] if args.baseline_saved_model else list(SIDES)
    for side in needed:
        if not (getattr(args, f"{side}_model_name") or args.model_name):
            parser.error(f"--model_name (or --{side}_model_name) is required")


def _open_sides(args: argparse.Namespace, stack: ExitStack) -> dict[str, Side]:
    sides: dict[str, Side] = {}
    for name in SIDES:
        side: Side
        if name == "baseline" and args.baseline_saved_model:
            print(f"{PROG}: loading {args.baseline_saved_model} in TensorFlow", file=sys.stderr)
            side = SavedModelSide(Path(args.baseline_saved_model), args.signature_name)
        else:
            target = Target(
                address=getattr(args, name),
                model=getattr(args, f"{name}_model_name") or args.model_name,
                signature=args.signature_name,
                version=getattr(args, f"{name}_version"),
                label=getattr(args, f"{name}_label"),
            )
            side = GrpcSide(target, args.timeout_seconds)
        stack.callback(side.close)
        sides[name] = side
    return sides


def _requests(args: argparse.Namespace, sides: Mapping[str, Side]) -> RequestSet:
    """Asks both sides for metadata first: an endpoint, model or signature that is not
    there stops the run (exit 2) rather than failing every request."""
    specs = {name: side.input_specs() for name, side in sides.items()}
    if args.requests:
        found = read_requests(Path(args.requests), specs["baseline"], args.num_requests)
    else:
        found = generate_requests(
            specs["baseline"], args.num_requests or DEFAULT_GENERATED, args.batch_size, args.seed
        )
    aliases = {name: sorted(spec) for name, spec in specs.items()}
    if aliases["baseline"] != aliases["candidate"]:
        found.notes.append(
            f"the signatures' inputs differ: baseline {aliases['baseline']}, "
            f"candidate {aliases['candidate']}"
        )
    return found


def run(args: argparse.Namespace) -> int:
    tolerance = Tolerance(
        args.atol,
        args.rtol,
        args.top_k,
        frozenset(a.strip() for a in args.top_k_outputs.split(",") if a.strip()),
    )
    plan = LatencyPlan(args.concurrency, args.rounds, args.duration_seconds, args.iterations)
    with ExitStack() as stack:
        sides = _open_sides(args, stack)
        found = _requests(args, sides)
        print(f"{PROG}: checking agreement on {len(found.requests)} requests", file=sys.stderr)
        agreement = compare_outputs(sides, found.requests, tolerance)
        usable = [found.requests[i] for i in agreement.answered]
        phases: list[Phase] = []
        if plan.rounds and usable:
            per_phase = (f"{plan.iterations} requests" if plan.iterations
                         else f"{plan.seconds:g} s")
            print(f"{PROG}: measuring latency: {plan.rounds} rounds of {per_phase} per side "
                  f"at concurrency {plan.concurrency}", file=sys.stderr)
            phases = measure_latency(sides, usable, plan)
        summary = _summary(args, sides, found, agreement, phases, plan)
    latencies_ms = {
        side: [latency * 1000 for p in phases if p.side == side for latency in p.latencies]
        for side in SIDES
    }
    files = write_report(summary, latencies_ms, Path(args.report_dir), args.format)
    print(_headline(summary))
    print("report: " + ", ".join(str(path) for path in files.values()))
    return EXIT_AGREE if summary["agreement"] else EXIT_DISAGREE


def _summary(
    args: argparse.Namespace,
    sides: Mapping[str, Side],
    found: RequestSet,
    agreement: Agreement,
    phases: Sequence[Phase],
    plan: LatencyPlan,
) -> dict[str, Any]:
    """What report.json holds; the Markdown and HTML reports are drawn from it alone."""
    tolerance = agreement.tolerance
    return {
        "agreement": agreement.passed,
        "model_name": args.model_name,
        "sides": {name: side.describe() for name, side in sides.items()},
        "requests": {
            "source": found.source,
            "count": len(found.requests),
            "answered_by_both": len(agreement.answered),
            "notes": found.notes,
        },
        "tolerance": {
            "atol": tolerance.atol,
            "rtol": tolerance.rtol,
            "top_k": tolerance.top_k or None,
            "top_k_outputs": sorted(tolerance.top_k_outputs),
        },
        "outputs": [agreement.outputs[alias].to_json() for alias in sorted(agreement.outputs)],
        "request_failures": [failure.to_json() for failure in agreement.failures],
        "latency": latency_summary(phases, plan) if phases else None,
    }


def _headline(summary: Mapping[str, Any]) -> str:
    failing = [o["alias"] for o in summary["outputs"] if not o["passed"]]
    refused = sum(1 for f in summary["request_failures"] if not f["both_refused_alike"])
    verdict = "PASS" if summary["agreement"] else "FAIL"
    count = len(summary["outputs"])
    details = [f"{count} output{'' if count == 1 else 's'}",
               f"{summary['requests']['answered_by_both']} requests answered by both"]
    if failing:
        details.append("differing: " + ", ".join(failing))
    if refused:
        details.append(f"{refused} requests refused by one side")
    line = f"agreement: {verdict} ({'; '.join(details)})"
    latency = summary["latency"]
    if latency and latency["baseline"]["p50_ms"] and latency["candidate"]["p50_ms"]:
        ratio = latency["ratio"]["p50_ms"]
        line += (f"\nlatency p50: baseline {latency['baseline']['p50_ms']:.3f} ms, candidate "
                 f"{latency['candidate']['p50_ms']:.3f} ms ({ratio:.2f}x)")
    return line


def main(argv: Sequence[str]) -> int:
    """Runs the command; returns its exit status rather than exiting."""
    quiet_cuda_probe()
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
        _check_arguments(parser, args)
    except SystemExit as exc:  # argparse's way out of --help and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return run(args)
    except (SideError, RequestError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
