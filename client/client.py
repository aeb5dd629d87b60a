"""A TensorFlow Serving gRPC client that needs no TensorFlow.

Only grpcio, numpy and protobuf: tensors go through :mod:`.tensors`, and the
messages are our own generated modules, so the client installs in seconds and
lives beside TensorFlow in one process without protobuf pool clashes. It
speaks to onnx-serving and to TF Serving alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message

from onnx_serving.codec.model_spec import fill_spec
from onnx_serving.codec.tensors import TensorProto, encode_into, make_ndarray
from onnx_serving.protos.tensorflow.core.protobuf import meta_graph_pb2
from onnx_serving.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

__all__ = ["Client", "ServingError", "VersionStatus"]

SignatureDef = meta_graph_pb2.SignatureDef

# Tensors grow past gRPC's 4 MiB default long before models do.
_UNLIMITED = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
_SIGNATURE_DEF = "signature_def"
# tensorflow.error.Code and grpc.StatusCode share their numbers.
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_State = get_model_status_pb2.ModelVersionStatus.State

R = TypeVar("R")


class ServingError(Exception):
    """A failed RPC, with the server's gRPC code and message kept verbatim."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)  # both in args, so the error pickles
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> ServingError:
        if isinstance(error, grpc.Call):
            return cls(error.code(), error.details() or "")
        return cls(grpc.StatusCode.UNKNOWN, str(error))


@dataclass(frozen=True)
class VersionStatus:
    """One version's row of GetModelStatus; ``error_code`` is OK unless a load failed."""

    version: int
    state: str  # "AVAILABLE", "END", ...: ModelVersionStatus.State's names
    error_code: grpc.StatusCode
    error_message: str


class Client:
    """PredictionService and ModelService calls over one channel.

    Give it "host:port" to own an insecure channel (closed with the client), or
    a channel you made (for TLS, say), which stays yours to close.
    """

    def __init__(self, target: str | grpc.Channel) -> None:
        if isinstance(target, str):
            self._channel = grpc.insecure_channel(target, options=list(_UNLIMITED))
            self._owns_channel = True
        else:
            self._channel = target
            self._owns_channel = False
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def predict(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray | TensorProto],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "",
        output_filter: Sequence[str] = (),
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs a signature (the model's default when empty); outputs by alias."""
        response = self.predict_response(
            model,
            inputs,
            version=version,
            label=label,
            signature=signature,
            output_filter=output_filter,
            timeout=timeout,
        )
        return {alias: make_ndarray(proto) for alias, proto in response.outputs.items()}

    def predict_response(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray | TensorProto],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = "",
        output_filter: Sequence[str] = (),
        timeout: float | None = None,
    ) -> predict_pb2.PredictResponse:
        """As :meth:`predict`, but the raw response: its model_spec says which version ran."""
        request = predict_pb2.PredictRequest(output_filter=output_filter)
        fill_spec(request.model_spec, model, version=version, label=label, signature=signature)
        for alias, value in inputs.items():
            _fill_tensor(request.inputs[alias], value)
        return _call(self._predict.Predict, request, timeout)

    def metadata(
        self,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, SignatureDef]:
        """The model's signatures by name, unpacked from the response's Any."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[_SIGNATURE_DEF])
        fill_spec(request.model_spec, model, version=version, label=label)
        response = _call(self._predict.GetModelMetadata, request, timeout)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        if not response.metadata[_SIGNATURE_DEF].Unpack(signatures):
            raise TypeError(
                f"signature_def metadata holds {response.metadata[_SIGNATURE_DEF].type_url!r}"
            )
        return dict(signatures.signature_def)

    def status(
        self, model: str, *, version: int | None = None, timeout: float | None = None
    ) -> list[VersionStatus]:
        """Every version's state, or one version's. No label: TF Serving ignores them here."""
        request = get_model_status_pb2.GetModelStatusRequest()
        fill_spec(request.model_spec, model, version=version)
        response = _call(self._models.GetModelStatus, request, timeout)
        return [
            VersionStatus(
                version=entry.version,
                state=_State.Name(entry.state),
                error_code=_CODES.get(entry.status.error_code, grpc.StatusCode.UNKNOWN),
                error_message=entry.status.error_message,
            )
            for entry in response.model_version_status
        ]


def _fill_tensor(target: TensorProto, value: np.ndarray | TensorProto) -> None:
    """Arrays are encoded; TensorProtos pass as they are, TensorFlow's own included."""
    if isinstance(value, TensorProto):
        target.CopyFrom(value)
    elif isinstance(value, Message) and value.DESCRIPTOR.full_name == "tensorflow.TensorProto":
        # Another descriptor pool's TensorProto (tf.make_tensor_proto's): same wire format.
        target.ParseFromString(value.SerializeToString())
    else:
        encode_into(target, np.asarray(value))


def _call(method: Callable[..., R], request: Message, timeout: float | None) -> R:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise ServingError.from_rpc_error(error) from error
