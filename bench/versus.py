"""onnx-serving at another commit beside this checkout's: whether a change moved a figure,
or the machine did.

    .venv/bin/python -m bench.versus --base REV [--model half_plus_two] [--clients 1,16]
        [--seconds 4] [--rounds 4] [--flags="--grpc_max_threads=4 ..."] [--rest]

REV's code is checked out into a temporary git worktree and served by this checkout's
virtual environment, on the same model with the same flags as this checkout's server;
the two are driven in turns by the suite's client (bench/floor.py's slots: ``--seconds``
each, the order reversed every other round), so the machine's drift lands on both. For
each: throughput, p50 and the server's CPU per request, this checkout's beside REV's.
``--rest`` asks over TF Serving's REST API instead of gRPC: ``:predict`` with the same
prediction in the row format (``{"instances": ...}``).
On a shared machine figures from separate runs differ by more than many changes do
(docs/performance.md); read the ratios of one run of this instead. REV's server must
take the flags the suite starts servers with (bench/suite/matrix.py).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from bench.floor import in_turns
from bench.suite import payloads
from bench.suite.matrix import start_serving
from bench.suite.models import REPO, BenchModel, ensure
from bench.suite.plan import parse
from bench.suite.processes import ServerProcess
from bench.suite.runners import Contender, GrpcContender, HttpContender

PACKAGE = "onnx_serving"  # the checkout's root is the package (pyproject.toml)


def checkout(stack: ExitStack, rev: str, folder: Path) -> Path:
    """A folder whose ``onnx_serving`` is ``rev``'s code, removed when ``stack`` closes."""
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet",
                    str(tree), rev], check=True)
    stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force",
                                    str(tree)], check=False)
    code = folder / "code"
    code.mkdir()
    (code / PACKAGE).symlink_to(tree, target_is_directory=True)
    return code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare with (any rev)")
    parser.add_argument("--model", default="half_plus_two")
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--seconds", type=float, default=4.0, help="per slot")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--flags", default="", help="server flags for both, one string")
    parser.add_argument("--rest", action="store_true", help="REST :predict instead of gRPC")
    args = parser.parse_args(argv)
    model = ensure(args.model, log=lambda line: print(line, file=sys.stderr))
    flags, plan = shlex.split(args.flags), parse([f"--models={model.name}"])
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-versus-")))
        code = checkout(stack, args.base, folder)
        servers: list[tuple[Contender, int]] = []
        for name, source in (("this checkout", None), (args.base, code)):
            server, _ = start_serving(model, plan, folder, f"versus-{len(servers)}", flags,
                                      code=source)
            stack.callback(server.stop)
            servers.append((_contender(name, server, model, args.rest), server.pid))
        in_turns(servers, args.clients, args.rounds, args.seconds)
    return 0


def _contender(name: str, server: ServerProcess, model: BenchModel, rest: bool) -> Contender:
    if not rest:
        return GrpcContender(name, server.address, payloads.request_bytes(model))
    assert server.rest_port is not None  # the suite's servers open REST
    return HttpContender(name, server.rest_port, f"/v1/models/{model.name}:predict",
                         payloads.rest_rows_body(model), {"Content-Type": "application/json"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
