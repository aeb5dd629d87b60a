"""One REST request, start to end, as blocking code: what the thread pool runs.

The steps of :predict keep TF Serving's order (HttpRestApiHandler and
FillPredictRequestFromJson), because it decides which error a bad request
gets: the path, then the JSON document and its signature_name, then the
model version and signature, then the inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from onnx_serving.server.api.rest.body import gunzip
from onnx_serving.server.api.rest.classify_request import read_examples
from onnx_serving.server.api.rest.classify_response import classification_json, regression_json
from onnx_serving.server.api.rest.model_info import metadata_json, status_json
from onnx_serving.server.api.rest.predict_request import read_inputs, signature_name
from onnx_serving.server.api.rest.predict_response import columnar_json, row_json
from onnx_serving.server.api.rest.rapidjson_compat import parse_object
from onnx_serving.server.api.rest.routes import Route
from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.messages.input import serialized_examples
from onnx_serving.server.metrics import REST
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.runtime.model import Outputs
from onnx_serving.server.runtime.signature import Signature, lookup_signature
from onnx_serving.server.serving.core import ModelRef, ServingCore
from onnx_serving.server.serving.predict import Served

R = TypeVar("R")


@dataclass(frozen=True)
class Answer:
    body: str
    version: int | None  # the version that answered (a status: the one asked for, if any)


class RestHandler:
    def __init__(self, core: ServingCore, *, max_gzip_bytes: int) -> None:
        """``max_gzip_bytes``: what a gzip body may inflate to (--rest_api_max_gzip_bytes)."""
        self._core = core
        self._max_gzip_bytes = max_gzip_bytes

    def handle(
        self, route: Route, body: bytes, gzipped: bool, deadline: Deadline | None = None
    ) -> Answer:
        """The JSON response body and who answered; errors are raised as ServingError."""
        if route.kind == "status":
            # A label is ignored, as in TF: every version (or the one asked for) is listed.
            return Answer(status_json(self._core.status(route.name, route.version)), route.version)
        ref = ModelRef(route.name, route.version, route.label)
        if route.kind == "metadata":
            metadata = self._core.metadata(ref)
            return Answer(metadata_json(metadata), metadata.version)
        if gzipped:
            body = gunzip(body, self._max_gzip_bytes)
        document = parse_object(body)
        requested = signature_name(document)
        answered = _Answered()
        if route.kind == "predict":
            call = _JsonPredict(document)
            text = self._core.predict(
                ref, requested, call.decode, answered(call.encode),
                entrypoint=REST, find=_rest_signature, deadline=deadline,
            )
        else:
            examples = serialized_examples(read_examples(document))
            if route.kind == "classify":
                text = self._core.classify(
                    ref, requested, examples, answered(classification_json), entrypoint=REST,
                    deadline=deadline,
                )
            else:
                text = self._core.regress(
                    ref, requested, examples, answered(regression_json), entrypoint=REST,
                    deadline=deadline,
                )
        return Answer(text, answered.version)


class _Answered:
    """Notes the version an answer is encoded for: what the access log reports."""

    version: int | None = None

    def __call__(self, encode: Callable[[Served, R], str]) -> Callable[[Served, R], str]:
        def noted(served: Served, result: R) -> str:
            self.version = served.version
            return encode(served, result)

        return noted


class _JsonPredict:
    """One :predict body's tensors, and its answer in the format the request used."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document
        self._columnar = False

    def decode(self, signature: Signature) -> dict[str, np.ndarray]:
        dtypes = {alias: spec.dtype for alias, spec in signature.inputs.items()}
        inputs = read_inputs(self._document, dtypes)
        self._columnar = inputs.columnar
        return inputs.tensors

    def encode(self, served: Served, outputs: Outputs) -> str:
        return columnar_json(outputs) if self._columnar else row_json(outputs)


def _rest_signature(signatures: Mapping[str, Signature], requested: str) -> Signature:
    """TF's REST handler looks the signature up itself, in its own words."""
    signature = lookup_signature(
        signatures, requested,
        lambda key: InvalidArgument(f'Serving signature name: "{key}" not found in signature def'),
    )
    if not signature.inputs:
        raise InvalidArgument(f"Failed to get input map for signature: {requested or 'DEFAULT'}")
    return signature
