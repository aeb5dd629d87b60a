"""Which versions are loaded, and which one answers a request.

The manager owns the state of every model version and nothing about how a
version is loaded: that is the injected ``loader``. A version that fails to
load ends in state END with its error, and never stops the others.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from onnx_serving.server.config import ModelConfig
from onnx_serving.server.errors import (
    InvalidArgument,
    ModelLoadError,
    NotFound,
    ServableNotFound,
    ServingError,
)
from onnx_serving.server.repository.source import scan_versions

log = logging.getLogger(__name__)

S = TypeVar("S")


class State(enum.IntEnum):
    """TF Serving's ModelVersionStatus.State, with its numbers."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: ServingError | None = None


@dataclass
class _Model(Generic[S]):
    config: ModelConfig
    statuses: dict[int, VersionStatus]
    servables: dict[int, S]


class ModelManager(Generic[S]):
    def __init__(self, loader: Callable[[Path], S]) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._models: dict[str, _Model[S]] = {}

    def load(self, configs: Iterable[ModelConfig]) -> None:
        """Loads every aspired version of every model; failures are recorded, not raised."""
        for config in configs:
            on_disk = scan_versions(config.name, config.base_path)
            aspired = sorted(config.policy.select(on_disk), reverse=True)
            model: _Model[S] = _Model(config, {}, {})
            with self._lock:
                self._models[config.name] = model
            for version in aspired:
                self._load_version(model, version, on_disk[version])
            for label, version in sorted(config.labels.items()):
                if version not in model.servables:
                    log.warning("Version label %s of model %s names version %d, which is not "
                                "available; requests with it get NOT_FOUND", label, config.name,
                                version)

    def _load_version(self, model: _Model[S], version: int, path: Path) -> None:
        name = model.config.name
        model.statuses[version] = VersionStatus(version, State.LOADING)
        log.info("Loading servable version {name: %s version: %d} from %s", name, version, path)
        started = time.monotonic()
        try:
            servable = self._loader(path)
        except ModelLoadError as exc:
            log.error("Failed to load servable version {name: %s version: %d}: %s",
                      name, version, exc.message)
            model.statuses[version] = VersionStatus(version, State.END, exc)
            return
        with self._lock:
            model.servables[version] = servable
            model.statuses[version] = VersionStatus(version, State.AVAILABLE)
        log.info("Successfully loaded servable version {name: %s version: %d} in %.0f ms",
                 name, version, (time.monotonic() - started) * 1000)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> tuple[int, S]:
        """The version that answers: by label, by number, or the highest available."""
        with self._lock:
            model = self._models.get(name)
            if label is not None:
                labelled = model.config.labels.get(label) if model else None
                if labelled is None:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")
                version = labelled
            if model is not None and model.servables:
                if version is None:
                    version = max(model.servables)
                servable = model.servables.get(version)
                if servable is not None:
                    return version, servable
        raise ServableNotFound(name, version)

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version seen, highest first, as GetModelStatus reports them."""
        with self._lock:
            model = self._models.get(name)
            statuses = dict(model.statuses) if model else {}
        if version is not None:
            if version not in statuses:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise NotFound(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)
