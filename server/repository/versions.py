"""What the manager knows of each model and each of its versions (its lock guards them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from onnx_serving.server.errors import ServingError
from onnx_serving.server.repository.model_config import ModelConfig
from onnx_serving.server.repository.source import Fingerprint, VersionDir
from onnx_serving.server.repository.transitions import State

S = TypeVar("S")


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: ServingError | None = None


@dataclass
class VersionEntry(Generic[S]):
    """One version of a model: its lifecycle state and, while available, its servable."""

    version: int
    path: Path
    fingerprint: Fingerprint
    state: State = State.START
    error: ServingError | None = None
    servable: S | None = None
    in_flight: int = 0
    attempts: int = 0
    retry_at: float = 0.0
    busy: bool = False  # a load or unload of it is running

    def status(self) -> VersionStatus:
        return VersionStatus(self.version, self.state, self.error)

    def retry_due(self, now: float) -> bool:
        """A failed load waits for its retry, and the time has come."""
        return self.state is State.LOADING and not self.busy and 0 < self.retry_at <= now


@dataclass
class ModelEntry(Generic[S]):
    """One model: its config, the versions its source wants served, and those known."""

    config: ModelConfig
    aspired: dict[int, VersionDir] = field(default_factory=dict)
    versions: dict[int, VersionEntry[S]] = field(default_factory=dict)
    removed: bool = False
    held: frozenset[int] = frozenset()  # not unloaded until a reload is in force
    source_error: ServingError | None = None  # why its base path cannot be listed now

    def available(self) -> list[int]:
        return [v for v, e in self.versions.items() if e.state is State.AVAILABLE]

    def serving(self) -> list[int]:
        """The available versions it is meant to serve (aspired), lowest first."""
        return sorted(v for v in self.available() if v in self.aspired)
