"""Warmup: a version is AVAILABLE only after its first requests have run.

With ``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord of
PredictionLog, as TF Serving reads it), every record's request is replayed
``iterations`` times against the loading version, and any failure fails the
load. Requests replay through the serving core (``ServingCore.in_hand``), so they
pass the checks a client's would. Without a file, an optional synthetic warmup
runs each signature once on zeros shaped from the graph, so the first client
does not pay for lazy initialization either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_serving.codec.prediction_log import PredictionLogError, read_prediction_logs
from onnx_serving.codec.served_model import MAX_RECORDS, WARMUP_FILE
from onnx_serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)
from onnx_serving.server.errors import Code, ModelLoadError, ServingError
from onnx_serving.server.messages.classify import (
    classification_response,
    multi_inference_response,
    regression_response,
    tasks,
)
from onnx_serving.server.messages.input import serialized_examples
from onnx_serving.server.messages.predict import decoder, response_encoder
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.serving.core import ModelRef, OneVersion, ServingCore

log = logging.getLogger(__name__)

WARMUP = "warmup"  # the entrypoint warmup's requests name (nothing counts them)


def _predict(core: ServingCore, request: predict_pb2.PredictRequest) -> object:
    spec = request.model_spec
    return core.predict(
        ModelRef(spec.name), spec.signature_name, decoder(request),
        response_encoder(tensor_content=False), entrypoint=WARMUP,
        output_filter=request.output_filter,
    )


def _classify(core: ServingCore, request: classification_pb2.ClassificationRequest) -> object:
    spec = request.model_spec
    return core.classify(
        ModelRef(spec.name), spec.signature_name, serialized_examples(request.input),
        classification_response, entrypoint=WARMUP,
    )


def _regress(core: ServingCore, request: regression_pb2.RegressionRequest) -> object:
    spec = request.model_spec
    return core.regress(
        ModelRef(spec.name), spec.signature_name, serialized_examples(request.input),
        regression_response, entrypoint=WARMUP,
    )


def _multi_inference(core: ServingCore, request: inference_pb2.MultiInferenceRequest) -> object:
    first = request.tasks[0].model_spec.name if request.tasks else ""
    return core.multi_inference(
        ModelRef(first), tasks(request), serialized_examples(request.input),
        multi_inference_response, entrypoint=WARMUP,
    )


# Each record kind TF Serving replays, and how: its request, on the loading version.
_REPLAY: dict[str, Callable[[ServingCore, Any], object]] = {
    "predict_log": _predict,
    "classify_log": _classify,
    "regress_log": _regress,
    "multi_inference_log": _multi_inference,
}


@dataclass(frozen=True)
class WarmupOptions:
    enabled: bool = True
    iterations: int = 1
    synthetic: bool = False
    synthetic_dim: int = 1


def warm_up(
    model: LoadedModel, version_dir: Path, options: WarmupOptions,
    core: ServingCore | None = None,
) -> bool:
    """``model``, loaded from ``version_dir`` and not yet served, warmed up through
    ``core``'s pipeline (its checks, --enable_signature_method_name_check included), or
    through a core of the server's defaults when none is given (``onnx-serving convert``
    checks a converted version so). Whether there was a warmup to run: TF Serving times
    one only then (saved_model_warmup_util.cc)."""
    if not options.enabled:
        return False
    path = version_dir / WARMUP_FILE
    if path.exists():
        replaying = core.in_hand(model) if core is not None else ServingCore(OneVersion(model))
        _replay(replaying, path, max(1, options.iterations))
        return True
    if options.synthetic:
        _synthetic(model, version_dir, options.synthetic_dim)
        return True
    return False


def _replay(core: ServingCore, path: Path, iterations: int) -> None:
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
                replay(core, request)
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
