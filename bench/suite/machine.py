"""The machine a run was on, for the report: numbers mean little without it."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def describe() -> list[str]:
    return [
        f"{os.cpu_count()} CPUs (nproc), {_cpu_model()}, {_memory_gib():.1f} GiB memory, "
        f"{platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, onnxruntime {_version('onnxruntime')}, "
        f"tensorflow {_version('tensorflow')}, grpcio {_version('grpcio')}, "
        f"tf2onnx {_version('tf2onnx')}",
    ]
