"""PredictRequest → the core's inputs, outputs → PredictResponse: for gRPC, warmup and the
request log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache

import numpy as np

from onnx_serving.codec.tensors import (
    TensorCodecError,
    TensorProto,
    TensorTooLarge,
    field_key,
    length_delimited,
    make_ndarray,
    tensor_bytes,
)
from onnx_serving.protos.tensorflow_serving.apis import model_pb2, predict_pb2
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
    """One parse of bytes built here: the spec's are made once per version and signature."""
    parts = [_spec_field(served)]
    for alias, array in outputs.items():
        entry = _output_key(alias) + length_delimited(
            _MAP_VALUE, tensor_bytes(array, tensor_content=tensor_content))
        parts.append(length_delimited(_OUTPUTS, entry))
    response.MergeFromString(b"".join(parts))


_FIELDS = predict_pb2.PredictResponse.DESCRIPTOR.fields_by_name
_OUTPUTS, _SPEC = field_key(_FIELDS["outputs"].number), field_key(_FIELDS["model_spec"].number)
_MAP_KEY, _MAP_VALUE = field_key(1), field_key(2)  # every map entry's key and value


@lru_cache(maxsize=4096)
def _spec_field(served: Served) -> bytes:
    spec = model_pb2.ModelSpec()
    fill_served(spec, served)
    return length_delimited(_SPEC, spec.SerializeToString())


@lru_cache(maxsize=4096)
def _output_key(alias: str) -> bytes:
    return length_delimited(_MAP_KEY, alias.encode("utf-8"))


def response_encoder(*, tensor_content: bool) -> Encode[predict_pb2.PredictResponse]:
    def encode(served: Served, outputs: Outputs) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse()
        fill_response(response, served, outputs, tensor_content=tensor_content)
        return response

    return encode
