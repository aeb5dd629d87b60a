"""tensorflow.serving.PredictionService: protobuf in and out of the serving core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import grpc
from google.protobuf import json_format, message_factory

from onnx_serving.codec.model_spec import fill_spec
from onnx_serving.protos._pool import POOL
from onnx_serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from onnx_serving.server.api.grpc.deadline import call_deadline
from onnx_serving.server.api.grpc.errors import translate_errors
from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.messages.classify import (
    classification_response,
    multi_inference_response,
    regression_response,
    tasks,
)
from onnx_serving.server.messages.input import serialized_examples
from onnx_serving.server.messages.model_spec import checked_spec, model_ref
from onnx_serving.server.messages.predict import decoder, response_encoder
from onnx_serving.server.metrics import GRPC
from onnx_serving.server.serving.core import ServingCore
from onnx_serving.server.serving.signature_def import SIGNATURE_DEF, signature_def_map

# onnx-serving's own field: the execution providers in use and the runtime config, as a
# google.protobuf.Struct. TF Serving's clients never ask for it.
RUNTIME = "onnx_serving/runtime"
_Struct = message_factory.GetMessageClass(POOL.FindMessageTypeByName("google.protobuf.Struct"))
_Base = prediction_service_pb2_grpc.PredictionServiceServicer


@translate_errors(_Base)
class PredictionService(_Base):
    def __init__(self, core: ServingCore, *, tensor_content: bool = False) -> None:
        """``tensor_content``: --enable_serialization_as_tensor_content."""
        self._core = core
        self._encode = response_encoder(tensor_content=tensor_content)

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        spec = checked_spec(request)
        return self._core.predict(
            model_ref(spec), spec.signature_name, decoder(request), self._encode,
            entrypoint=GRPC, output_filter=request.output_filter,
            deadline=call_deadline(context),
        )

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        spec = checked_spec(request)
        if not request.metadata_field:
            raise InvalidArgument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field not in (SIGNATURE_DEF, RUNTIME):
                raise InvalidArgument(f"Metadata field {field} is not supported")
        metadata = self._core.metadata(model_ref(spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        fill_spec(response.model_spec, metadata.name, version=metadata.version)
        if SIGNATURE_DEF in request.metadata_field:
            response.metadata[SIGNATURE_DEF].Pack(signature_def_map(metadata.signatures))
        if RUNTIME in request.metadata_field:
            described = _Struct()
            config = _plain(asdict(metadata.runtime))
            json_format.ParseDict(
                {"active_providers": metadata.providers, "config": config}, described
            )
            response.metadata[RUNTIME].Pack(described)
        return response

    def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        spec = checked_spec(request)
        return self._core.classify(
            model_ref(spec), spec.signature_name, serialized_examples(request.input),
            classification_response, entrypoint=GRPC, deadline=call_deadline(context),
        )

    def Regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        spec = checked_spec(request)
        return self._core.regress(
            model_ref(spec), spec.signature_name, serialized_examples(request.input),
            regression_response, entrypoint=GRPC, deadline=call_deadline(context),
        )

    def MultiInference(
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        # TF Serving picks the model and version by the first task's spec.
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        return self._core.multi_inference(
            model_ref(first), tasks(request), serialized_examples(request.input),
            multi_inference_response, entrypoint=GRPC, deadline=call_deadline(context),
        )


def _plain(value: Any) -> Any:
    """The runtime config as JSON values (tuples become lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
