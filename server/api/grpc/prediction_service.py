"""tensorflow.serving.PredictionService over the model manager."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format, message_factory

from onnx_serving.client.tensors import TensorCodecError, datatype_of, encode_into, make_ndarray
from onnx_serving.protos._pool import POOL
from onnx_serving.protos.tensorflow.core.protobuf import meta_graph_pb2
from onnx_serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from onnx_serving.server.api.grpc.model_spec import acquire, checked_spec, fill_spec
from onnx_serving.server.api.grpc.status import translate_errors
from onnx_serving.server.errors import InvalidArgument, Unimplemented
from onnx_serving.server.metrics import GRPC, Metrics, StageClock
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.runtime.graph import Shape
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.runtime.signature import Signature, TensorSpec, find_signature

SIGNATURE_DEF = "signature_def"
# onnx-serving's own field: the execution providers in use and the runtime config, as a
# google.protobuf.Struct. TF Serving's clients never ask for it.
RUNTIME = "onnx_serving/runtime"
_Struct = message_factory.GetMessageClass(POOL.FindMessageTypeByName("google.protobuf.Struct"))
_Base = prediction_service_pb2_grpc.PredictionServiceServicer


@translate_errors(_Base)
class PredictionService(_Base):
    def __init__(
        self,
        manager: ModelManager[LoadedModel],
        metrics: Metrics,
        *,
        tensor_content: bool = False,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._tensor_content = tensor_content

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        name = request.model_spec.name

        def observe(stage: str, seconds: float) -> None:
            self._metrics.stage(name, GRPC, stage, seconds)

        with acquire(self._manager, request) as (version, model):
            return run_predict(
                model, version, request, tensor_content=self._tensor_content, observe=observe
            )

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        checked_spec(request)
        if not request.metadata_field:
            raise InvalidArgument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field not in (SIGNATURE_DEF, RUNTIME):
                raise InvalidArgument(f"Metadata field {field} is not supported")
        with acquire(self._manager, request) as (version, model):
            signatures, providers, runtime = model.signatures, model.providers, model.runtime
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        fill_spec(response.model_spec, request.model_spec.name, version)
        if SIGNATURE_DEF in request.metadata_field:
            response.metadata[SIGNATURE_DEF].Pack(signature_def_map(signatures))
        if RUNTIME in request.metadata_field:
            described = _Struct()
            json_format.ParseDict(
                {"active_providers": providers, "config": _plain(asdict(runtime))}, described
            )
            response.metadata[RUNTIME].Pack(described)
        return response

    def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        raise Unimplemented("Classify is not implemented by onnx-serving yet; use Predict")

    def Regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        raise Unimplemented("Regress is not implemented by onnx-serving yet; use Predict")

    def MultiInference(
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        raise Unimplemented("MultiInference is not implemented by onnx-serving yet; use Predict")


def _plain(value: Any) -> Any:
    """The runtime config as JSON values (tuples become lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def run_predict(
    model: LoadedModel,
    version: int,
    request: predict_pb2.PredictRequest,
    *,
    tensor_content: bool,
    observe: Callable[[str, float], None] | None = None,
) -> predict_pb2.PredictResponse:
    """Predict on one pinned version; warmup replays requests through here too.

    ``observe`` gets the seconds spent in each stage: decode, run, encode.
    """
    clock = StageClock(observe)
    signature = find_signature(model.signatures, request.model_spec.signature_name)
    # Checked again by predict(); first here so key errors precede decoding ones, as in TF.
    signature.check_input_keys(request.inputs.keys())
    inputs = {alias: _decode(alias, proto) for alias, proto in request.inputs.items()}
    clock.lap("decode")
    response = predict_pb2.PredictResponse()
    with model.predict(signature, inputs, request.output_filter) as prediction:
        clock.lap("run")
        fill_spec(response.model_spec, request.model_spec.name, version, signature.name)
        for alias, array in prediction.items():
            encode_into(response.outputs[alias], array, tensor_content=tensor_content)
    clock.lap("encode")
    return response


def _decode(alias: str, proto: object) -> np.ndarray:
    try:
        return make_ndarray(proto)  # type: ignore[arg-type]
    except TensorCodecError as exc:
        raise InvalidArgument(f"tensor parsing error: {alias}: {exc}") from None


def signature_def_map(
    signatures: Mapping[str, Signature],
) -> get_model_metadata_pb2.SignatureDefMap:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in signatures.items():
        signature_map.signature_def[name].CopyFrom(signature_def(signature))
    return signature_map


def signature_def(signature: Signature) -> meta_graph_pb2.SignatureDef:
    message = meta_graph_pb2.SignatureDef(method_name=signature.method_name)
    for alias, spec in signature.inputs.items():
        _fill_tensor_info(message.inputs[alias], spec)
    for alias, spec in signature.outputs.items():
        _fill_tensor_info(message.outputs[alias], spec)
    return message


def _fill_tensor_info(info: meta_graph_pb2.TensorInfo, spec: TensorSpec) -> None:
    info.name = spec.name
    info.dtype = datatype_of(spec.dtype)  # type: ignore[assignment]
    _fill_shape(info, spec.declared_shape)


def _fill_shape(info: meta_graph_pb2.TensorInfo, shape: Shape) -> None:
    if shape is None:
        info.tensor_shape.unknown_rank = True
        return
    info.tensor_shape.SetInParent()
    for dim in shape:
        info.tensor_shape.dim.add(size=-1 if dim is None else dim)
