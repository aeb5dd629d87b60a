"""PredictRequest → the core's inputs, outputs → PredictResponse: for gRPC, warmup and the
request log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from onnx_serving.codec.tensors import (
    TensorCodecError,
    TensorProto,
    TensorTooLarge,
    encode_into,
    make_ndarray,
)
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2
from onnx_serving.server.errors import InvalidArgument, ResourceExhausted
from onnx_serving.server.messages.model_spec import fill_served
from onnx_serving.server.runtime.model import Outputs
from onnx_serving.server.serving.predict import Decode, Encode, Served


class ProtoInputs(Mapping[str, np.ndarray]):
    """A request's tensors, each decoded when read: the core checks the keys first."""

    def __init__(self, protos: Mapping[str, TensorProto]) -> None:
        self._protos = protos

    def __getitem__(self, alias: str) -> np.ndarray:
        try:
            return make_ndarray(self._protos[alias])
        except TensorTooLarge as exc:
            raise ResourceExhausted(f"tensor parsing error: {alias}: {exc}") from None
        except TensorCodecError as exc:
            raise InvalidArgument(f"tensor parsing error: {alias}: {exc}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)


def decoder(request: predict_pb2.PredictRequest) -> Decode:
    """The request's inputs whatever the signature: TF decodes protos without it."""
    inputs = ProtoInputs(request.inputs)  # type: ignore[arg-type]
    return lambda _signature: inputs


def fill_response(
    response: predict_pb2.PredictResponse, served: Served, outputs: Outputs, *,
    tensor_content: bool = False,
) -> None:
    fill_served(response.model_spec, served)
    for alias, array in outputs.items():
        encode_into(response.outputs[alias], array, tensor_content=tensor_content)


def response_encoder(*, tensor_content: bool) -> Encode[predict_pb2.PredictResponse]:
    def encode(served: Served, outputs: Outputs) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        fill_response(response, served, outputs, tensor_content=tensor_content)
        return response

    return encode
