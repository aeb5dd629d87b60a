"""Where the server's CPU goes per request: py-spy on a live server under closed-loop load.

    .venv/bin/python -m bench.profile_server [--model half_plus_two] [--clients 16]
        [--seconds 10] [--out DIR] [--rate 250] [-- SERVER FLAGS...]

Starts onnx-serving on a bench model (the suite's flags, Prometheus on), drives it
with the suite's client (raw bytes, one channel per thread) and records every thread
of the server with py-spy (``pip install py-spy``; it needs ptrace rights). Writes
``DIR/flame.svg`` and ``DIR/top.txt``: the share of samples whose stack holds each
function (inclusive) and each leaf (self), beside the throughput and the server's CPU
per request over the same window, so each share reads as CPU time per request.
Only the thread holding the GIL is sampled (``--gil``): Python's own CPU, the part a
request's handling can cut; waits and ONNX Runtime's GIL-free run are left out.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.suite import load, payloads
from bench.suite.matrix import start_serving
from bench.suite.models import ensure
from bench.suite.plan import parse
from bench.suite.runners import GrpcContender


def _top(collapsed: Path, total_cpu_ms: float, requests: int, lines: int = 40) -> str:
    """Inclusive and self shares per function from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        # "function (path/file.py:line)" -> "function file.py"; the first is the thread.
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")").split(":")[0]
                  for f in stack.split(";")[1:]]
        samples += n
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            leaf[frames[-1]] += n
    per = total_cpu_ms / requests if requests else 0.0
    out = [f"{samples} samples; server CPU {per:.3f} ms per request "
           "(µs per request = share x that)", "", "inclusive:"]
    out += [f"{100 * n / samples:5.1f}%  {1000 * per * n / samples:7.1f} µs  {f}"
            for f, n in inclusive.most_common(lines)]
    out += ["", "self:"]
    out += [f"{100 * n / samples:5.1f}%  {1000 * per * n / samples:7.1f} µs  {f}"
            for f, n in leaf.most_common(lines)]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="half_plus_two")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path("profile"))
    parser.add_argument("server_flags", nargs="*")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure(args.model, log=lambda line: print(line, file=sys.stderr))
    plan = parse(["--quick", f"--models={args.model}"])
    with tempfile.TemporaryDirectory() as folder:
        server, probe = start_serving(model, plan, Path(folder), "profile", args.server_flags)
        contender = GrpcContender("onnx-serving", server.address, payloads.request_bytes(model))
        try:
            callers = [contender.caller() for _ in range(args.clients)]
            load.run(callers, seconds=1.0, warmup=0.5)
            collapsed = args.out / "collapsed.txt"
            # --gil: only the thread holding the GIL, i.e. Python's CPU; waits are left out.
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--gil",
                   "--pid", str(server.pid), "--rate", str(args.rate),
                   "--duration", str(int(args.seconds))]
            # Two samplers at once: py-spy writes one format per recording.
            recorders = [
                subprocess.Popen([*spy, "--format", "raw", "-o", str(collapsed)]),
                subprocess.Popen([*spy, "--format", "flamegraph", "-o",
                                  str(args.out / "flame.svg")]),
            ]
            sample = load.run(callers, seconds=args.seconds, warmup=0.0,
                              on_open=probe.read, on_close=probe.read)
            for recorder in recorders:
                recorder.wait()
        finally:
            contender.close()
            server.stop()
    _, cpu_ms, _ = probe.per_request(1)
    cpu_ms = cpu_ms or 0.0
    report = (f"{args.model}, {args.clients} clients, {sample.throughput:.0f} req/s, "
              f"p50 {sample.percentile_ms(50):.2f} ms, errors {sample.errors}\n"
              + _top(collapsed, cpu_ms, sample.count))
    (args.out / "top.txt").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
