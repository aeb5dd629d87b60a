"""ServingCore: the manager and metrics behind every front end's requests.

``App`` builds one and hands it to each transport and to warmup (MLServer's
DataPlane): metrics, the signature-method check and the request log are set
here once, for every way a request arrives.

Each request may carry a ``Deadline`` (runtime/deadline.py), a plain value the
front end makes from its own transport: a request whose caller no longer waits
is answered at once (DEADLINE_EXCEEDED or CANCELLED) instead of taking the
model. Memory that cannot be had answers RESOURCE_EXHAUSTED: the server's
limit, not a bad request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import numpy as np

from onnx_serving.server.errors import Code, ResourceExhausted, ServingError
from onnx_serving.server.metrics import Metrics
from onnx_serving.server.repository.versions import VersionStatus
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.runtime.signature import Signature, find_signature
from onnx_serving.server.serving.classify import Classifications, classify, regress
from onnx_serving.server.serving.multi_inference import Task, TaskResult, multi_inference
from onnx_serving.server.serving.predict import Decode, Encode, Served, predict
from onnx_serving.server.serving.request_log import RequestLogHook

T = TypeVar("T")
Observe = Callable[[str, float], None]


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


class Versions(Protocol):
    """Where the core finds the answering version: the repository's ModelManager."""

    def acquire(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> AbstractContextManager[tuple[int, LoadedModel]]: ...

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]: ...


class ServingCore:
    def __init__(
        self,
        versions: Versions,
        metrics: Metrics | None = None,
        *,
        method_check: bool = False,
        request_log: RequestLogHook | None = None,
    ) -> None:
        """Without ``metrics``, stages go unobserved.
        ``method_check``: --enable_signature_method_name_check, for Classify and Regress;
        ``request_log`` logs the sampled requests of models with a logging_config."""
        self._versions = versions
        self._metrics = metrics
        self._method_check = method_check
        self._request_log = request_log

    def in_hand(self, model: LoadedModel) -> ServingCore:
        """The same pipeline and checks on a version not yet served (warmup's, while it
        loads), as TF Serving's warmup runs requests on the servable it loads: version 0
        is echoed, nothing is counted or logged."""
        return ServingCore(OneVersion(model), method_check=self._method_check)

    def pin(self, ref: ModelRef) -> AbstractContextManager[tuple[int, LoadedModel]]:
        """The answering version, kept loaded until the block ends."""
        return self._versions.acquire(ref.name, ref.version, ref.label)

    def _serving(
        self, ref: ModelRef, deadline: Deadline | None
    ) -> AbstractContextManager[tuple[int, LoadedModel]]:
        """``pin`` for a request that is still awaited, counted by the version that
        answers it; out of memory is its status."""
        return _Serving(self, ref, deadline)

    def _observer(self, model: str, entrypoint: str, api: str) -> Observe | None:
        return None if self._metrics is None else self._metrics.stages(model, entrypoint, api)

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
        deadline: Deadline | None = None,
    ) -> T:
        """See ``predict.predict``; ``entrypoint`` labels the stage metrics."""
        observe = self._observer(ref.name, entrypoint, "Predict")
        log = None if self._request_log is None else self._request_log.predict_logger(
            ref.name, ref.version, ref.label, output_filter
        )
        with self._serving(ref, deadline) as (version, model):
            return predict(
                model, ref.name, version, signature_name, decode, encode,
                output_filter=output_filter, find=find, observe=observe, log=log,
                deadline=deadline,
            )

    def classify(
        self,
        ref: ModelRef,
        signature_name: str,
        examples: np.ndarray,
        encode: Callable[[Served, Classifications], T],
        *,
        entrypoint: str,
        deadline: Deadline | None = None,
    ) -> T:
        """``examples``: serialized tf.Example, shape [N] (see ``classify.classify``)."""
        observe = self._observer(ref.name, entrypoint, "Classify")
        if self._request_log is not None:
            encode = _logged(encode, self._request_log.classify_logger(
                ref.name, ref.version, ref.label, examples
            ))
        with self._serving(ref, deadline) as (version, model):
            return classify(
                model, ref.name, version, signature_name, examples, encode,
                method_check=self._method_check, observe=observe, deadline=deadline,
            )

    def regress(
        self,
        ref: ModelRef,
        signature_name: str,
        examples: np.ndarray,
        encode: Callable[[Served, np.ndarray], T],
        *,
        entrypoint: str,
        deadline: Deadline | None = None,
    ) -> T:
        observe = self._observer(ref.name, entrypoint, "Regress")
        if self._request_log is not None:
            encode = _logged(encode, self._request_log.regress_logger(
                ref.name, ref.version, ref.label, examples
            ))
        with self._serving(ref, deadline) as (version, model):
            return regress(
                model, ref.name, version, signature_name, examples, encode,
                method_check=self._method_check, observe=observe, deadline=deadline,
            )

    def multi_inference(
        self,
        ref: ModelRef,
        tasks: Sequence[Task],
        examples: np.ndarray,
        encode: Callable[[list[TaskResult]], T],
        *,
        entrypoint: str,
        deadline: Deadline | None = None,
    ) -> T:
        """``ref`` is the first task's model, as TF Serving picks the version by it."""
        observe = self._observer(ref.name, entrypoint, "MultiInference")
        if self._request_log is not None:
            encode = _logged(encode, self._request_log.multi_inference_logger(
                ref.name, ref.version, ref.label, tasks, examples
            ))
        with self._serving(ref, deadline) as (version, model):
            return multi_inference(
                model, version, tasks, examples, encode,
                method_check=self._method_check, observe=observe, deadline=deadline,
            )

    def metadata(self, ref: ModelRef) -> ModelMetadata:
        with self.pin(ref) as (version, model):
            return ModelMetadata(
                ref.name, version, model.signatures, model.providers, model.runtime
            )

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version seen (or one), as GetModelStatus reports them; labels play no part."""
        return self._versions.statuses(name, version)


class _Serving:
    """``ServingCore._serving``'s block, as a plain context manager: every request
    enters one, and a generator-based one costs several times as much."""

    __slots__ = ("_core", "_deadline", "_pinned", "_record", "_ref", "_started")

    def __init__(self, core: ServingCore, ref: ModelRef, deadline: Deadline | None) -> None:
        self._core, self._ref, self._deadline = core, ref, deadline

    def __enter__(self) -> tuple[int, LoadedModel]:
        if self._deadline is not None:
            self._deadline.check()
        core, ref = self._core, self._ref
        self._pinned = core.pin(ref)
        pinned = self._pinned.__enter__()
        metrics = core._metrics
        self._record = None if metrics is None else metrics.version(ref.name, pinned[0])
        self._started = time.perf_counter()
        return pinned

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            code = Code.OK
        elif isinstance(exc, ServingError):
            code = exc.code
        elif isinstance(exc, MemoryError):
            code = Code.RESOURCE_EXHAUSTED
        else:
            code = Code.INTERNAL  # anything but a ServingError: the front end's answer
        try:
            if self._record is not None:
                self._record(code, time.perf_counter() - self._started)
        finally:
            self._pinned.__exit__(kind, exc, tb)
        if isinstance(exc, MemoryError):
            raise ResourceExhausted(
                f"Out of memory serving a request for model {self._ref.name}"
            ) from None


class OneVersion:
    """Versions of one loaded model, answering whatever a request names as version 0:
    a version not (yet) served, as warmup runs it."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model

    def acquire(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> AbstractContextManager[tuple[int, LoadedModel]]:
        return nullcontext((0, self._model))

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        return []


def _logged(encode: Callable[..., T], log: Callable[..., None] | None) -> Callable[..., T]:
    """``encode``, then the request log told of the answer (a sampled request only)."""
    if log is None:
        return encode

    def encode_and_log(*answer: Any) -> T:
        encoded = encode(*answer)
        log(*answer)
        return encoded

    return encode_and_log
