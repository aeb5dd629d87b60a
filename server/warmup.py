"""Warmup: a version is AVAILABLE only after its first requests have run.

With ``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord of
PredictionLog, as TF Serving reads it), every record's request is replayed
``iterations`` times against the loading version, and any failure fails the
load. Without one, an optional synthetic warmup runs each signature once on
zeros shaped from the graph, so the first client does not pay for lazy
initialization either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_serving.codec.prediction_log import PredictionLogError, read_prediction_logs
from onnx_serving.server.api.grpc.examples import (
    classify_pinned,
    multi_inference_pinned,
    regress_pinned,
)
from onnx_serving.server.api.grpc.predict import predict_pinned
from onnx_serving.server.errors import Code, ModelLoadError, ServingError
from onnx_serving.server.runtime.model import LoadedModel

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000
# Each record kind TF Serving replays, and how: the request on the loading version.
_REPLAY: dict[str, Callable[[LoadedModel, Any, bool], object]] = {
    "predict_log": lambda model, request, _method_check: predict_pinned(model, request),
    "classify_log": classify_pinned,
    "regress_log": regress_pinned,
    "multi_inference_log": multi_inference_pinned,
}


@dataclass(frozen=True)
class WarmupOptions:
    enabled: bool = True
    iterations: int = 1
    synthetic: bool = False
    synthetic_dim: int = 1
    method_check: bool = False  # --enable_signature_method_name_check


def warm_up(model: LoadedModel, version_dir: Path, options: WarmupOptions) -> None:
    if not options.enabled:
        return
    path = version_dir / WARMUP_FILE
    if path.exists():
        _replay(model, path, max(1, options.iterations), options.method_check)
    elif options.synthetic:
        _synthetic(model, version_dir, options.synthetic_dim)


def _replay(model: LoadedModel, path: Path, iterations: int, method_check: bool) -> None:
    try:
        records = list(read_prediction_logs(path))
    except (OSError, PredictionLogError) as exc:
        raise ModelLoadError(f"cannot read warmup file: {exc}", Code.DATA_LOSS) from exc
    if len(records) > MAX_RECORDS:
        raise ModelLoadError(
            f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
            Code.INVALID_ARGUMENT,
        )
    replayed = 0
    for index, record in enumerate(records):
        kind = record.WhichOneof("log_type")
        replay = _REPLAY.get(kind or "")
        if replay is None:
            raise ModelLoadError(f"Unsupported log_type for warmup: {kind}", Code.UNIMPLEMENTED)
        request = getattr(record, kind).request  # type: ignore[arg-type]
        for _ in range(iterations):
            try:
                replay(model, request, method_check)
            except ServingError as exc:
                raise ModelLoadError(
                    f"warmup record {index} of {path} failed: {exc.message}", exc.code
                ) from exc
        replayed += 1
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.",
             path.parent.parent, replayed)


def _synthetic(model: LoadedModel, version_dir: Path, dim: int) -> None:
    """Best effort: zeros may not suit every model, so a failure is logged, not fatal."""
    for signature in model.signatures.values():
        inputs = {}
        for alias, spec in signature.inputs.items():
            dims = (None,) if spec.shape is None else spec.shape
            shape = tuple(dim if d is None else d for d in dims)
            fill = b"" if spec.dtype == object else 0
            inputs[alias] = np.full(shape, fill, dtype=spec.dtype)
        try:
            with model.predict(signature, inputs):
                pass
        except ServingError as exc:
            log.warning("Synthetic warmup of signature %s in %s failed: %s",
                        signature.name, version_dir, exc.message)
        else:
            log.info("Synthetic warmup of signature %s in %s done", signature.name, version_dir)
