"""What one run measures: models, loads, contenders, settings; and how long it will take."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from bench.suite.models import SPECS

SERVING = "onnx-serving"
BATCHING = "onnx-serving + batching"
ECHO = "echo (gRPC floor)"
# The echo reading and writing protobuf's messages and running the model on each request:
# what any gRPC Python server that runs it pays (bench/floor.py). Small-request model only.
RUN_FLOOR = "echo + the model's run"
ORT = "ORT in-process"
TF = "TF in-process"
CONTENDERS = {"serving": SERVING, "batching": BATCHING, "echo": ECHO, "floor": RUN_FLOOR,
              "ort": ORT, "tf": TF}
GRPC_CONTENDERS = (SERVING, BATCHING, ECHO, RUN_FLOOR)

# The batching contender's parameters file; empty: --enable_batching alone (the server's
# defaults, TF Serving's: no batch timeout, so batches form only while runs are busy).
DEFAULT_BATCHING = ""
SWEEP_MODEL = "mobilenet_v2"  # the throughput targets' model: ORT's best over batch sizes
FLAGS_CLIENTS = 16  # requests in flight for the default-flags throughput targets
TARGET_MODEL = "half_plus_two"  # the batching-vs-none target's model, at --target_clients


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    concurrency: tuple[int, ...]
    contenders: tuple[str, ...]  # display names, in the order run
    seconds: float  # measured, per cell, over all rounds
    warmup: float  # per slot
    rounds: int  # slots per cell, contender order reversed every other round
    intra_op_threads: int
    inter_op_threads: int
    tf_intra_op_threads: int  # 0: TensorFlow's choice, as TF Serving's default
    tf_inter_op_threads: int
    grpc_threads: int
    channels: str
    batching_parameters: str
    sweep_batches: tuple[int, ...]
    target_clients: int
    json_path: str | None
    # More onnx-serving configurations, each a contender: (label, extra server flags).
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # ONNX Runtime session config entries, for the server (through --runtime_config_file)
    # and in-process alike, e.g. session.intra_op.allow_spinning=0.
    ort_config: tuple[tuple[str, str], ...] = ()
    many_models: int = 0  # models in the many-models case (0: not run)

    @property
    def all_contenders(self) -> tuple[str, ...]:
        return self.contenders + tuple(variant_name(label) for label, _ in self.variants)

    @property
    def slot_seconds(self) -> float:
        return self.seconds / self.rounds

    def estimate_seconds(self) -> float:
        """Measured time plus warm-ups, a drain allowance per slot and start-ups per model."""
        slot = self.slot_seconds + self.warmup + 0.5
        total = 10.0  # TensorFlow's import
        for model in self.models:
            contenders = len(self.all_contenders) - (
                RUN_FLOOR in self.contenders and model != TARGET_MODEL)
            total += 15 + len(self.concurrency) * contenders * self.rounds * slot
            if model == SWEEP_MODEL and ORT in self.contenders:
                total += len(self.sweep_batches) * self.rounds * (slot + 0.5)
            if model == TARGET_MODEL and BATCHING in self.contenders and self.target_clients:
                total += 2 * self.rounds * slot
        if self.many_models:
            total += 60 + 2 * self.many_models
        return total


def variant_name(label: str) -> str:
    return f"{SERVING} ({label})"


def _variant(text: str) -> tuple[str, tuple[str, ...]]:
    label, sep, flags = text.partition("=")
    if not sep or not label:
        raise argparse.ArgumentTypeError("expected LABEL=FLAGS, e.g. 'w2=--num_workers=2'")
    return label, tuple(shlex.split(flags))


def _entry(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, value


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def parse(argv: Sequence[str]) -> Plan:
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite",
        description="onnx-serving beside in-process ONNX Runtime, a gRPC echo floor and "
                    "in-process TensorFlow; prints a markdown table.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small models, 2 s cells in 2 rounds: a few minutes")
    parser.add_argument("--models", help=f"comma-separated from {','.join(SPECS)} "
                        "(default: all; --quick: the small ones)")
    parser.add_argument("--concurrency", default=f"1,{FLAGS_CLIENTS}",
                        help="client threads per cell")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated from {','.join(CONTENDERS)}")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell (default 10; "
                        "--quick 2)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each slot "
                        "(default 1; --quick 0.5)")
    parser.add_argument("--rounds", type=int, help="slots per cell, alternating the contender "
                        "order (default 4; --quick 2)")
    parser.add_argument("--intra_op_threads", type=int, default=0,
                        help="ONNX Runtime's intra-op threads, for the server "
                        "(--tensorflow_intra_op_parallelism) and in-process (default 0: no "
                        "flag, the server's own choice; ONNX Runtime's default in-process)")
    parser.add_argument("--inter_op_threads", type=int, default=0)
    parser.add_argument("--tf_intra_op_threads", type=int, default=0,
                        help="TensorFlow in-process (default 0: its own choice, as TF Serving's "
                        "default, so that it stands for TF Serving at its best)")
    parser.add_argument("--tf_inter_op_threads", type=int, default=0)
    parser.add_argument("--grpc_threads", type=int, default=0,
                        help="--grpc_max_threads of onnx-serving, and the echo server's pool "
                        "(default 0: no flag, the server's four per CPU; the echo server too)")
    parser.add_argument("--channels", choices=["per-thread", "shared"], default="per-thread",
                        help="one gRPC channel (connection) per client thread, or one for all")
    parser.add_argument("--batching_parameters", default=DEFAULT_BATCHING,
                        help="batching_parameters_file text for the batching contender "
                        "(default: none, the server's batching defaults)")
    parser.add_argument("--sweep_batches", default="1,4,8",
                        help=f"batch sizes for ORT's best throughput on {SWEEP_MODEL}")
    parser.add_argument("--target_clients", type=int, default=64,
                        help=f"clients for the batching target on {TARGET_MODEL} (0: skip)")
    parser.add_argument("--variant", type=_variant, action="append", default=[],
                        metavar="LABEL=FLAGS", help="one more onnx-serving contender with extra "
                        "server flags, e.g. 'workers2=--num_workers=2' (repeatable)")
    parser.add_argument("--ort_config", type=_entry, action="append", default=[],
                        metavar="KEY=VALUE", help="an ONNX Runtime session config entry for the "
                        "server (via --runtime_config_file) and in-process ORT (repeatable)")
    parser.add_argument("--many_models", type=int, default=20,
                        help="models on one server for the many-models case: threads, RSS, "
                        "p99 while another swaps (0: skip; --quick: 0)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.models:
        models = tuple(m for m in args.models.split(",") if m)
    else:
        models = tuple(n for n, s in SPECS.items() if s.small or not args.quick)
    unknown = [m for m in models if m not in SPECS]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {list(SPECS)}")
    keys = [k for k in args.contenders.split(",") if k]
    if any(k not in CONTENDERS for k in keys):
        parser.error(f"--contenders takes {list(CONTENDERS)}")
    quick = args.quick
    return Plan(
        models=models,
        concurrency=_ints(args.concurrency),
        contenders=tuple(CONTENDERS[k] for k in CONTENDERS if k in keys),
        seconds=args.seconds or (2.0 if quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        rounds=args.rounds or (2 if quick else 4),
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        tf_intra_op_threads=args.tf_intra_op_threads,
        tf_inter_op_threads=args.tf_inter_op_threads,
        grpc_threads=args.grpc_threads,
        channels=args.channels,
        batching_parameters=args.batching_parameters,
        sweep_batches=_ints(args.sweep_batches),
        target_clients=args.target_clients,
        json_path=args.json,
        variants=tuple(args.variant),
        ort_config=tuple(args.ort_config),
        many_models=0 if quick and "--many_models" not in " ".join(argv) else args.many_models,
    )
