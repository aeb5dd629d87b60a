"""ServingCore: the manager and metrics behind every front end's requests."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

from onnx_serving.server.metrics import Metrics
from onnx_serving.server.repository.manager import ModelManager, VersionStatus
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.runtime.signature import Signature, find_signature
from onnx_serving.server.serving.predict import Decode, Encode, predict

T = TypeVar("T")


@dataclass(frozen=True)
class ModelRef:
    """The model a request names: the highest available version unless one is asked for."""

    name: str
    version: int | None = None
    label: str | None = None


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    version: int
    signatures: Mapping[str, Signature]
    providers: list[str]
    runtime: RuntimeConfig


class ServingCore:
    def __init__(self, manager: ModelManager[LoadedModel], metrics: Metrics | None = None) -> None:
        """Without ``metrics``, stages go unobserved (ModelService has none to feed)."""
        self._manager = manager
        self._metrics = metrics

    def pin(self, ref: ModelRef) -> AbstractContextManager[tuple[int, LoadedModel]]:
        """The answering version, kept loaded until the block ends."""
        return self._manager.acquire(ref.name, ref.version, ref.label)

    def predict(
        self,
        ref: ModelRef,
        signature_name: str,
        decode: Decode,
        encode: Encode[T],
        *,
        entrypoint: str,
        output_filter: Sequence[str] = (),
        find: Callable[[Mapping[str, Signature], str], Signature] = find_signature,
    ) -> T:
        """See ``predict.predict``; ``entrypoint`` labels the stage metrics."""
        observe = (
            None if self._metrics is None
            else functools.partial(self._metrics.stage, ref.name, entrypoint)
        )
        with self.pin(ref) as (version, model):
            return predict(
                model, ref.name, version, signature_name, decode, encode,
                output_filter=output_filter, find=find, observe=observe,
            )

    def metadata(self, ref: ModelRef) -> ModelMetadata:
        with self.pin(ref) as (version, model):
            return ModelMetadata(
                ref.name, version, model.signatures, model.providers, model.runtime
            )

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version seen (or one), as GetModelStatus reports them; labels play no part."""
        return self._manager.statuses(name, version)
