"""One REST request, start to end, as blocking code: what the thread pool runs.

The steps of :predict keep TF Serving's order (HttpRestApiHandler and
FillPredictRequestFromJson), because it decides which error a bad request
gets: the path, then the JSON document and its signature_name, then the
model version and signature, then the inputs.
"""

from __future__ import annotations

import functools

from onnx_serving.server.api.rest.body import gunzip
from onnx_serving.server.api.rest.model_info import metadata_json, status_json
from onnx_serving.server.api.rest.predict_request import read_inputs, signature_name
from onnx_serving.server.api.rest.predict_response import columnar_json, row_json
from onnx_serving.server.api.rest.rapidjson_compat import parse_object
from onnx_serving.server.api.rest.routes import Route
from onnx_serving.server.errors import InvalidArgument, Unimplemented
from onnx_serving.server.metrics import REST, Metrics, StageClock
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.runtime.signature import DEFAULT_SIGNATURE


class RestHandler:
    def __init__(self, manager: ModelManager[LoadedModel], metrics: Metrics) -> None:
        self._manager = manager
        self._metrics = metrics

    def handle(self, route: Route, body: bytes, gzipped: bool) -> str:
        """The JSON response body; errors are raised as ServingError."""
        if route.kind == "status":
            return status_json(self._manager, route.name, route.version)
        if route.kind == "metadata":
            with self._manager.acquire(route.name, route.version, route.label) as pinned:
                version, model = pinned
            return metadata_json(route.name, version, model.signatures)
        if gzipped:
            body = gunzip(body)
        if route.kind == "predict":
            return self._predict(route, body)
        # As gRPC's PredictionService answers them, word for word.
        what = "Classify" if route.kind == "classify" else "Regress"
        raise Unimplemented(f"{what} is not implemented by onnx-serving yet; use Predict")

    def _predict(self, route: Route, body: bytes) -> str:
        clock = StageClock(functools.partial(self._metrics.stage, route.name, REST))
        document = parse_object(body)
        requested = signature_name(document)
        # The version stays pinned (not unloaded) until its outputs are out.
        with self._manager.acquire(route.name, route.version, route.label) as (_, model):
            key = requested or DEFAULT_SIGNATURE
            signature = model.signatures.get(key)
            if signature is None:
                raise InvalidArgument(
                    f'Serving signature name: "{key}" not found in signature def'
                )
            if not signature.inputs:
                raise InvalidArgument(
                    f"Failed to get input map for signature: {requested or 'DEFAULT'}"
                )
            dtypes = {alias: spec.dtype for alias, spec in signature.inputs.items()}
            inputs = read_inputs(document, dtypes)
            clock.lap("decode")
            with model.predict(signature, inputs.tensors) as outputs:
                clock.lap("run")
                text = columnar_json(outputs) if inputs.columnar else row_json(outputs)
        clock.lap("encode")
        return text
