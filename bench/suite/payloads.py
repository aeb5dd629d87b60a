"""The bytes on the wire: the request every gRPC contender gets, TF Serving REST's body
for the same prediction, and what the light client would spend making the request and
reading the answer (which the suite leaves out)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from bench.suite.models import BenchModel
from onnx_serving.codec.tensors import encode_into, make_ndarray
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2


def request_bytes(model: BenchModel, batch: int = 1) -> bytes:
    """What onnx_serving.client.Client would send: our encoder, typed fields."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.name
    for alias, array in model.sample(batch).items():
        encode_into(request.inputs[alias], array)
    return request.SerializeToString()


def rest_rows_body(model: BenchModel, batch: int = 1) -> bytes:
    """The same prediction as TF Serving REST ``:predict``'s row format: ``{"instances":
    [{alias: row, ...}, ...]}``."""
    inputs = model.sample(batch)
    return json.dumps({"instances": [
        {alias: array[row].tolist() for alias, array in inputs.items()} for row in range(batch)
    ]}).encode()


def client_costs(model: BenchModel, response: bytes) -> tuple[float, float]:
    """Milliseconds the light client would add per request (encode; decode). The suite
    sends pre-serialized bytes, so these are left out of every gRPC contender alike."""
    inputs = model.sample(1)

    def encode() -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model.name
        for alias, array in inputs.items():
            encode_into(request.inputs[alias], array)
        request.SerializeToString()

    def decode() -> None:
        parsed = predict_pb2.PredictResponse.FromString(response)
        for proto in parsed.outputs.values():
            make_ndarray(proto)

    return _mean_ms(encode), _mean_ms(decode)


def _mean_ms(function: Callable[[], None], budget: float = 0.3) -> float:
    function()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget or count < 5:
        function()
        count += 1
    return elapsed / count * 1000


def outputs_agree(response: bytes, expected: list[np.ndarray]) -> bool:
    """Each served output is one of in-process ONNX Runtime's (which runs every graph
    output: a signature may serve fewer, as half_plus_two's serves ``y`` of two)."""
    parsed = predict_pb2.PredictResponse.FromString(response)
    served = [make_ndarray(parsed.outputs[k]) for k in parsed.outputs]
    return bool(served) and all(
        any(a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5) for b in expected)
        for a in served
    )
