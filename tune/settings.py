"""The settings a sweep tries, and how each becomes server files.

Each is the product of the values given per knob; ``default`` (the server with no
runtime.json of ours) always comes first, as the setting to beat.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.threads import SPINNING, Threads, choose

# Batching knobs a sweep may set, in TF Serving's BatchingParameters text format.
BATCHING_KEYS = ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                 "max_enqueued_batches")


@dataclass(frozen=True)
class Setting:
    """One server configuration; ``None`` fields are left to the server's defaults."""

    instances: int | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    spinning: bool | None = None
    graph_optimization_level: str | None = None
    batching: tuple[tuple[str, int], ...] = field(default=())  # empty: no batching

    @property
    def is_default(self) -> bool:
        return self == Setting()

    @property
    def label(self) -> str:
        if self.is_default:
            return "default"
        parts = []
        if self.instances is not None:
            parts.append(f"inst={self.instances}")
        if self.intra_op_threads is not None:
            parts.append(f"intra={self.intra_op_threads}")
        if self.inter_op_threads is not None:
            parts.append(f"inter={self.inter_op_threads}")
        if self.spinning is not None:
            parts.append("spin" if self.spinning else "nospin")
        if self.graph_optimization_level is not None:
            parts.append(f"opt={self.graph_optimization_level}")
        if self.batching:
            parts.append("batch(" + ",".join(f"{k}={v}" for k, v in self.batching) + ")")
        return " ".join(parts)

    def runtime_json(self) -> dict[str, object]:
        """What the model's runtime.json says for this setting (only what it sets)."""
        document: dict[str, object] = {}
        session: dict[str, object] = {}
        if self.instances is not None:
            document["instances"] = self.instances
        if self.intra_op_threads is not None:
            session["intra_op_threads"] = self.intra_op_threads
        if self.inter_op_threads is not None:
            session["inter_op_threads"] = self.inter_op_threads
        if self.graph_optimization_level is not None:
            session["graph_optimization_level"] = self.graph_optimization_level
        if self.spinning is not None:
            session["config_entries"] = {SPINNING: "1" if self.spinning else "0"}
        if session:
            document["session"] = session
        return document

    def batching_text(self) -> str:
        return "".join(f"{key} {{ value: {value} }}\n" for key, value in self.batching)

    def server_flags(self, folder: Path) -> list[str]:
        """Flags that give a server this setting, its files written into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        flags = []
        runtime = self.runtime_json()
        if runtime:
            path = folder / "runtime.json"
            path.write_text(json.dumps(runtime, indent=2) + "\n")
            flags.append(f"--runtime_config_file={path}")
        if self.batching:
            path = folder / "batching_parameters.txt"
            path.write_text(self.batching_text())
            flags += ["--enable_batching", f"--batching_parameters_file={path}"]
        return flags

    def busy_threads(self, cpus: int) -> int:
        """Threads computing when every instance runs."""
        return self.threads(cpus).busy_threads

    def threads(self, cpus: int) -> Threads:
        """Instances and threads as the server resolves them on ``cpus`` cores."""
        return choose(RuntimeConfig(instances=self.instances or 0,
                                    intra_op_threads=self.intra_op_threads or 0), cpus)


def parse_batching(text: str) -> tuple[tuple[str, int], ...]:
    """``none`` or ``key=value,...`` with keys from BATCHING_KEYS."""
    if text.strip().lower() in ("", "none", "off"):
        return ()
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in BATCHING_KEYS:
            raise ValueError(f"batching setting {part!r}: expected KEY=VALUE with KEY in "
                             f"{list(BATCHING_KEYS)}")
        pairs.append((key, int(value)))
    return tuple(pairs)


def grid(
    instances: list[int | None], intra: list[int | None], inter: list[int | None],
    spinning: list[bool | None], levels: list[str | None],
    batching: list[tuple[tuple[str, int], ...]], cpus: int,
) -> list[Setting]:
    """``default`` first, then every combination that the server would not run exactly as
    an earlier one (``auto`` resolved as the server resolves it on ``cpus`` cores)."""
    settings: list[Setting] = []
    seen = set()
    for combo in itertools.product(instances, intra, inter, spinning, levels, batching):
        for setting in ([Setting()] if not settings else []) + [Setting(*combo)]:
            threads = setting.threads(cpus)
            key = (threads.instances, threads.intra_op_threads, setting.inter_op_threads or 1,
                   bool(setting.spinning), setting.graph_optimization_level or "all",
                   setting.batching)
            if key not in seen:
                seen.add(key)
                settings.append(setting)
    return settings
