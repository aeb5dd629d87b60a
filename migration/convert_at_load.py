"""The process a server converts one SavedModel version in (server/repository/conversion.py).

    python -m onnx_serving.migration.convert_at_load SAVED_DIR TARGET REPORT \
        [--parent_pid=PID] [--memory_mb=N]

TensorFlow never enters the serving process: the server runs this module as a child.
It converts with ``onnx-serving convert``'s own machinery and defaults
(``convert_version``: tf2onnx per signature, validation against TensorFlow, the warmup
records replayed on the converted version), which publishes TARGET only once whole and
valid, and writes REPORT, a JSON object: convert's result (``status``, ``problems``,
``notes``, ``signatures``, errors, ``seconds``) and ``peak_memory_mb``, or
``status: "missing"`` when TensorFlow or tf2onnx is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import resource
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

# What conversion needs beyond serving: the migration extra.
NEEDED = ("tensorflow", "tf2onnx")


def _exit_with_parent(parent: int) -> None:
    """A server killed outright cannot stop its conversion: the child stops itself."""
    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _missing() -> list[str]:
    """Why each package conversion needs cannot be imported (an import, not a look-up:
    an install can be there and broken)."""
    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name}: {exc}")
    return missing


def _peak_memory_mb() -> float:
    """The largest resident size of this process or of a child it waited for (tf2onnx's)."""
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return peak / 1024  # KiB on Linux


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="convert_at_load", description=__doc__)
    parser.add_argument("saved_dir", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("--parent_pid", type=int, default=0)
    parser.add_argument("--memory_mb", type=int, default=0,
                        help="address-space limit of this process and its children; 0: none")
    args = parser.parse_args(argv)
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    if args.memory_mb > 0:
        limit = args.memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from onnx_serving.migration.saved_model import quiet_cuda_probe

    quiet_cuda_probe()  # before TensorFlow loads
    missing = _missing()
    if missing:
        report: dict[str, object] = {"status": "missing", "problems": missing}
    else:
        from onnx_serving.migration.convert import Options, convert_version

        saved_dir: Path = args.saved_dir
        name = saved_dir.parent.name
        version = int(saved_dir.name) if saved_dir.name.isdigit() else 0
        result = convert_version(name, version, saved_dir, args.target, Options())
        report = dataclasses.asdict(result)
    report["peak_memory_mb"] = round(_peak_memory_mb())
    args.report.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
