"""``onnx-serving``: the console script.

``onnx-serving serve`` takes tensorflow_model_server's flags, so a
deployment swaps the binary and keeps its command line; ``convert`` and
``compare`` are the migration tools (docs/migration.md).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from onnx_serving.server.errors import ConfigError
from onnx_serving.server.flags import parse_flags, usage
from onnx_serving.server.workers import check_ports_free, run_workers

if TYPE_CHECKING:
    from onnx_serving.server.app import App

log = logging.getLogger("onnx_serving")


def _version() -> str:
    from importlib.metadata import version

    return version("onnx-serving")


def serve(argv: Sequence[str]) -> int:
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(usage())
        return 0
    if any(a in ("--version", "-version") for a in argv):
        print(f"onnx-serving {_version()}")
        return 0
    # Taken before the models load: a stop asked for during start-up (an orchestrator's,
    # or --num_workers' supervisor's) drains once start-up ends, instead of killing the
    # process half started.
    stop_requested = threading.Event()
    app: App | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name)
        stop_requested.set()
        if app is not None:
            app.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a hangup drains too
        signal.signal(signum, stop)
    try:
        options = parse_flags(argv)
        if options.num_workers > 1:
            check_ports_free([options.port, options.rest_api_port])
            return run_workers(argv, options.num_workers)  # with its own signal handlers
        # Imported here: the parent of --num_workers' processes loads no models, nor their
        # libraries (it only supervises).
        from onnx_serving.server.app import App

        app = App(options)
        if stop_requested.is_set():
            app.request_stop()
        app.start()
    except ConfigError as exc:
        print(f"Failed to start server. Error: {exc.message}", file=sys.stderr)
        return 1
    app.wait()
    app.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    parser = argparse.ArgumentParser(prog="onnx-serving", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve", add_help=False, help="serve a model repository (tensorflow_model_server's flags)"
    )
    commands.add_parser(
        "convert", add_help=False, help="convert SavedModel versions to ONNX (needs [migration])"
    )
    commands.add_parser(
        "compare", add_help=False, help="compare two TF Serving API endpoints (needs [migration])"
    )
    commands.add_parser(
        "tune", add_help=False, help="measure server settings under a load; write the best "
        "as the model's runtime.json (needs [tune])"
    )
    args, rest = parser.parse_known_args(argv)
    if args.command == "serve":
        return serve(rest)
    # Imported on demand: serving never loads TensorFlow, tf2onnx or matplotlib.
    if args.command == "tune":
        from onnx_serving.tune import cli as tune

        return tune.main(rest)
    if args.command == "convert":
        from onnx_serving.migration import convert

        return convert.main(rest)
    from onnx_serving.migration import compare

    return compare.main(rest)


if __name__ == "__main__":
    sys.exit(main())
