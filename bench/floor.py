"""How far the small-request targets sit above what gRPC Python allows: the echo floor,
climbed one step at a time to a server that does nothing but run the model.

    .venv/bin/python -m bench.floor [--model half_plus_two] [--clients 1,16,64]
        [--seconds 5] [--rounds 2]

Five servers, up side by side and driven in turns by the suite's client (raw bytes,
one channel per thread), each round in the reverse order of the last: the bare echo
(bench/suite/echo_server.py), the echo reading and writing protobuf messages
(``--parse``), the echo also running the model on each request (``--run``), the bare
echo on onnx-serving's own unary lane (``--lane``: the floor of the transport it uses),
and onnx-serving with default flags. For each: throughput, p50, and the server's CPU per
request, each beside the bare echo's. The step from ``--run`` to onnx-serving is
onnx-serving's own Python; the steps below it are what any gRPC Python server that
runs the model pays.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.suite import load, payloads
from bench.suite.echo_server import PATH
from bench.suite.matrix import start_echo, start_serving
from bench.suite.models import ensure
from bench.suite.plan import parse
from bench.suite.probes import Probe
from bench.suite.runners import Contender, GrpcContender
from onnx_serving.server.runtime.threads import cores

SERVING = "onnx-serving"


@dataclass
class Step:
    contender: Contender
    probe: Probe
    sample: load.Sample = field(default_factory=load.Sample)
    cpu_seconds: float = 0.0


def _measure(step: Step, clients: int, seconds: float) -> None:
    """One slot of ``step`` at ``clients``: its requests and its server's CPU added."""
    callers = [step.contender.caller() for _ in range(clients)]
    step.probe.readings.clear()
    sample = load.run(callers, seconds=seconds, warmup=1.0,
                      on_open=step.probe.read, on_close=step.probe.read)
    first, last = step.probe.readings[0], step.probe.readings[-1]
    assert first.server_cpu is not None and last.server_cpu is not None
    step.cpu_seconds += last.server_cpu - first.server_cpu
    step.sample.add(sample)
    step.contender.close()


def _table(steps: list[Step], clients: int) -> str:
    """Each step's figures, and its ratios to the first step's."""
    first = steps[0]
    first_rate = first.sample.throughput
    first_cpu = first.cpu_seconds / max(first.sample.count, 1)
    rows = [f"\n{clients} client(s)\n",
            f"| server | req/s | vs {first.contender.name} | p50 ms | server CPU ms/request | "
            f"vs {first.contender.name} | errors |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for step in steps:
        cpu = step.cpu_seconds / max(step.sample.count, 1)
        rows.append(
            f"| {step.contender.name} | {step.sample.throughput:.0f} | "
            f"{step.sample.throughput / first_rate:.2f}x | {step.sample.percentile_ms(50):.3f} | "
            f"{cpu * 1000:.3f} | {cpu / first_cpu:.2f}x | {step.sample.errors} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="half_plus_two")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    model = ensure(args.model, log=lambda line: print(line, file=sys.stderr))
    request = payloads.request_bytes(model)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        folder = Path(tmp)
        serving, _ = start_serving(model, parse([f"--models={model.name}"]), folder, "floor")
        stack.callback(serving.stop)
        with grpc.insecure_channel(serving.address) as channel:
            response = channel.unary_unary(PATH)(request, timeout=600)
        (folder / "request.bin").write_bytes(request)
        steps = {
            "echo": [],
            "echo + protobuf messages": ["--parse"],
            "echo + protobuf messages + the model's run":
                ["--parse", f"--run={model.onnx_file}", f"--request={folder / 'request.bin'}"],
            "echo on onnx-serving's unary lane": ["--lane"],
        }
        servers: list[tuple[Contender, int]] = []  # bottom step first
        for name, flags in steps.items():
            process = start_echo(stack, folder, f"floor-{len(servers)}", response,
                                 4 * cores(), flags)
            servers.append((GrpcContender(name, process.address, request), process.pid))
        servers.append((GrpcContender(SERVING, serving.address, request), serving.pid))

        in_turns(servers, args.clients, args.rounds, args.seconds)
    return 0


def in_turns(servers: Sequence[tuple[Contender, int]], clients: str, rounds: int,
             seconds: float) -> None:
    """Prints each count of ``clients`` (comma-separated) a table of ``servers`` (a
    contender that calls the server, and its pid), measured in slots of ``seconds``, the
    order reversed every other round."""
    for count in (int(c) for c in clients.split(",")):
        steps = [Step(contender, Probe(server_pid=pid))
                 for contender, pid in servers]
        for round_ in range(rounds):
            for step in steps if round_ % 2 == 0 else reversed(steps):
                _measure(step, count, seconds)
        print(_table(steps, count), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
