"""How a model runs: execution providers, session options, caches, IO binding.

Read from ``runtime.json`` files (docs/runtime.md), each overriding the keys it
names: the server-wide ``--runtime_config_file``, then ``<base_path>/runtime.json``
(every version of a model), then ``<version>/runtime.json``. Providers are
explicit and ordered; the session module refuses a load where one of them is
missing unless ``allow_fallback`` says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from onnx_serving.server.errors import ConfigError, ModelLoadError

RUNTIME_FILE = "runtime.json"
CPU = "CPUExecutionProvider"
LEVELS: Final = ("disabled", "basic", "extended", "all")
MODES: Final = ("sequential", "parallel")
THREAD_POOLS: Final = ("session", "global")


@dataclass(frozen=True)
class Provider:
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeConfig:
    providers: tuple[Provider, ...] = (Provider(CPU),)
    allow_fallback: bool = False
    graph_optimization_level: str = "all"
    intra_op_threads: int = 0  # 0: sized to the cores and instances (runtime/threads.py)
    inter_op_threads: int = 0  # 0: one
    instances: int = 0  # runs of one version at once; 0: sized to the cores
    thread_pool: str = "session"  # or "global": ONNX Runtime's process-wide pools
    execution_mode: str = "sequential"
    enable_mem_arena: bool = True
    enable_mem_pattern: bool = True
    session_config: Mapping[str, str] = field(default_factory=dict)
    # Where optimized models (and TensorRT engines without a path of their own) are kept
    # across restarts; empty: nowhere.
    cache_dir: str = ""
    io_binding: bool = False
    # --per_process_gpu_memory_fraction: a CUDA memory limit per device (runtime/gpu_memory.py)
    gpu_memory_fraction: float = 0.0

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self.providers]


_SESSION_KEYS: Final = {
    "graph_optimization_level", "intra_op_threads", "inter_op_threads", "execution_mode",
    "enable_mem_arena", "enable_mem_pattern", "config_entries",
}
_TOP_KEYS: Final = {
    "execution_providers", "allow_fallback", "session", "cache_dir", "io_binding", "instances",
    "thread_pool",
}


def merge_file(base: RuntimeConfig, path: Path, error: type[Exception] = ModelLoadError) -> (
    RuntimeConfig
):
    """``base`` with what ``path`` sets; ``error`` is raised naming the file and the key."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path}: {exc}") from exc
    try:
        return _merge(base, document)
    except (TypeError, ValueError) as exc:
        raise error(f"{path}: {exc}") from exc


def for_version(server_default: RuntimeConfig, version_dir: Path) -> RuntimeConfig:
    config = server_default
    for path in (version_dir.parent / RUNTIME_FILE, version_dir / RUNTIME_FILE):
        if path.is_file():
            config = merge_file(config, path)
            if config.thread_pool != server_default.thread_pool:
                raise ModelLoadError(f"{path}: thread_pool is chosen for the whole process; "
                                     "set it in --runtime_config_file")
    return config


def server_default(
    path: str, intra_op_threads: int, inter_op_threads: int, gpu_memory_fraction: float = 0.0
) -> RuntimeConfig:
    """The flags' thread counts and GPU memory fraction, then --runtime_config_file on top."""
    config = RuntimeConfig(intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                           gpu_memory_fraction=gpu_memory_fraction)
    return merge_file(config, Path(path), ConfigError) if path else config


def _merge(base: RuntimeConfig, document: Any) -> RuntimeConfig:
    if not isinstance(document, dict):
        raise TypeError("a runtime config is a JSON object")
    unknown = document.keys() - _TOP_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    changes: dict[str, Any] = {}
    if "execution_providers" in document:
        changes["providers"] = tuple(_provider(p) for p in document["execution_providers"])
        if not changes["providers"]:
            raise ValueError("execution_providers is empty")
    for key in ("allow_fallback", "io_binding"):
        if key in document:
            changes[key] = _typed(document, key, bool)
    if "cache_dir" in document:
        changes["cache_dir"] = _typed(document, "cache_dir", str)
    if "instances" in document:
        changes["instances"] = _typed(document, "instances", int)
        if changes["instances"] < 0:
            raise ValueError("instances must be 0 (sized to the cores) or more")
    if "thread_pool" in document:
        if document["thread_pool"] not in THREAD_POOLS:
            raise ValueError(f"thread_pool must be one of {list(THREAD_POOLS)}")
        changes["thread_pool"] = document["thread_pool"]
    session = document.get("session", {})
    if not isinstance(session, dict) or session.keys() - _SESSION_KEYS:
        raise ValueError(f"session takes the keys {sorted(_SESSION_KEYS)}")
    for key, kind in (("intra_op_threads", int), ("inter_op_threads", int),
                      ("enable_mem_arena", bool), ("enable_mem_pattern", bool)):
        if key in session:
            changes[key] = _typed(session, key, kind)
    for key, allowed in (("graph_optimization_level", LEVELS), ("execution_mode", MODES)):
        if key in session:
            if session[key] not in allowed:
                raise ValueError(f"session.{key} must be one of {list(allowed)}")
            changes[key] = session[key]
    if "config_entries" in session:
        entries = session["config_entries"]
        if not isinstance(entries, dict):
            raise TypeError("session.config_entries maps ONNX Runtime config keys to strings")
        changes["session_config"] = {str(k): str(v) for k, v in entries.items()}
    return replace(base, **changes)


def _provider(raw: Any) -> Provider:
    if isinstance(raw, str):
        return Provider(raw)
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        options = raw.get("options", {})
        if not isinstance(options, dict):
            raise TypeError(f"options of {raw['name']} must be an object")
        return Provider(raw["name"], dict(options))
    raise TypeError('each execution provider is a name or {"name": ..., "options": {...}}')


def _typed(document: Mapping[str, Any], key: str, kind: type) -> Any:
    value = document[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be a {kind.__name__}")
    return value
