"""inference.GRPCInferenceService (the Open Inference Protocol over gRPC) on the gRPC port.

Served beside TF Serving's services by the same server, so --port,
--grpc_socket_path, TLS, health, reflection, the request metrics and the
access log hold for it too. Errors become statuses where TF Serving's do
(``api/grpc/errors.py``).

Tensors come either all in ``raw_input_contents`` or all in typed
``InferTensorContents`` (FP16 and BF16 only raw, as the protocol says). The
answer uses the request's form: typed contents for a typed request, unless an
output is FP16 or BF16, which only raw contents can carry; then, and for a raw
request (tritonclient's), every output is in ``raw_output_contents``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import grpc
import numpy as np

from onnx_serving.codec.oip import RawTensorError, element_count, from_raw, to_raw
from onnx_serving.codec.tensors import element_bytes
from onnx_serving.protos.inference import open_inference_grpc_pb2 as pb
from onnx_serving.protos.inference import open_inference_grpc_pb2_grpc as pb_grpc
from onnx_serving.server.api.grpc.deadline import call_deadline
from onnx_serving.server.api.grpc.errors import translate_errors
from onnx_serving.server.api.grpc.server import Service
from onnx_serving.server.api.oip.inference import (
    EXTENSIONS,
    SERVER_NAME,
    Inference,
    InferOutput,
    InputData,
    server_version,
)
from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.metrics import GRPC
from onnx_serving.server.serving.predict import Served

SERVICE_NAME: Final = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

# Each datatype's typed field, and the type of its values there (narrower types are
# carried in a wider field and must fit). FP16 and BF16 have none.
_TYPED: Final[dict[str, tuple[str, np.dtype]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}

_Base = pb_grpc.GRPCInferenceServiceServicer


@translate_errors(_Base)
class InferenceService(_Base):
    def __init__(self, inference: Inference) -> None:
        self._inference = inference

    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._inference.server_ready())

    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=self._inference.model_ready(request.name, request.version)
        )

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=server_version(), extensions=EXTENSIONS
        )

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        metadata = self._inference.model_metadata(request.name, request.version)
        response = pb.ModelMetadataResponse(
            name=metadata.name, versions=metadata.versions, platform=metadata.platform
        )
        for tensors, field in ((metadata.inputs, response.inputs),
                               (metadata.outputs, response.outputs)):
            for tensor in tensors:
                field.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        return response

    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidArgument(
                f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
            )
        inputs = [
            _input(tensor, raw[i] if raw else None) for i, tensor in enumerate(request.inputs)
        ]

        def encode(served: Served, outputs: list[InferOutput]) -> pb.ModelInferResponse:
            response = pb.ModelInferResponse(
                model_name=served.name, model_version=str(served.version), id=request.id
            )
            as_raw = bool(raw) or not request.inputs or any(
                o.datatype not in _TYPED for o in outputs
            )
            for output in outputs:
                tensor = response.outputs.add(
                    name=output.name, datatype=output.datatype, shape=output.shape
                )
                if as_raw:
                    response.raw_output_contents.append(to_raw(output.array))
                else:
                    field, _ = _TYPED[output.datatype]
                    values: Any = output.array.reshape(-1)
                    if output.datatype == "BYTES":
                        values = [element_bytes(v) for v in values]
                    getattr(tensor.contents, field).extend(values)
            return response

        return self._inference.infer(
            request.model_name, request.model_version, inputs,
            [output.name for output in request.outputs], encode,
            entrypoint=GRPC, deadline=call_deadline(context),
        )


def _input(tensor: Any, raw: bytes | None) -> InputData:
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    typed = tensor.HasField("contents")
    if raw is not None and typed:
        raise InvalidArgument(
            f"input '{name}' has contents although raw_input_contents is given"
        )
    decode: Callable[[np.dtype], np.ndarray]
    if raw is not None:
        def decode(dtype: np.dtype) -> np.ndarray:
            try:
                return from_raw(raw, dtype, shape)
            except RawTensorError as exc:
                raise InvalidArgument(f"input '{name}': raw contents {exc}") from None
    else:
        def decode(dtype: np.dtype) -> np.ndarray:
            return _typed(name, datatype, shape, tensor.contents, dtype)
    return InputData(name, datatype, shape, decode)


def _typed(name: str, datatype: str, shape: list[int], contents: Any, dtype: np.dtype
           ) -> np.ndarray:
    """``dtype``: the model's, which ``datatype`` was checked to be."""
    if datatype not in _TYPED:
        raise InvalidArgument(
            f"input '{name}' is {datatype}, which only raw_input_contents can carry"
        )
    field, carried = _TYPED[datatype]
    values = getattr(contents, field)
    try:
        count = element_count(shape, dtype)
    except RawTensorError as exc:
        raise InvalidArgument(f"input '{name}': {exc}") from None
    if len(values) != count:
        raise InvalidArgument(
            f"input '{name}' has {len(values)} elements in {field}, but shape "
            f"[{','.join(map(str, shape))}] needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    array = np.array(values, dtype=carried)
    if carried != dtype:  # a narrower integer: every value must fit
        narrowed = array.astype(dtype)
        if not np.array_equal(narrowed, array):
            raise InvalidArgument(
                f"input '{name}' has {field} values out of range for {datatype}")
        array = narrowed
    return array.reshape(shape)


def grpc_service(inference: Inference) -> Service:
    """What the gRPC server adds to serve OIP (api/grpc/server.py)."""
    return Service(
        SERVICE_NAME,
        lambda server: pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(inference), server
        ),
    )
