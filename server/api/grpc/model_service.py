"""tensorflow.serving.ModelService: version states and config reload."""

from __future__ import annotations

from typing import Protocol

import grpc

from onnx_serving.protos.tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)
from onnx_serving.server.api.grpc.errors import translate_errors
from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.messages.model_spec import checked_spec
from onnx_serving.server.messages.status import status_response
from onnx_serving.server.repository.model_config import ModelConfig, from_proto
from onnx_serving.server.serving.core import ServingCore

_Base = model_service_pb2_grpc.ModelServiceServicer


class Reload(Protocol):
    def __call__(self, configs: list[ModelConfig], *, timeout: float | None = None) -> None: ...


@translate_errors(_Base)
class ModelService(_Base):
    def __init__(self, core: ServingCore, reload: Reload) -> None:
        """``reload`` applies a config (with --num_workers, in every worker)."""
        self._core = core
        self._reload = reload

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = checked_spec(request)
        # A label is ignored, as TF Serving ignores it here: every version is listed.
        version = spec.version.value if spec.HasField("version") else None
        return status_response(self._core.status(spec.name, version))

    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        """Replies once new models are available (or with why not), as TF Serving does.

        A failure is both the RPC's status and the reply's ``status``; metric deltas
        (``metric_names``) are not reported yet.
        """
        if request.config.WhichOneof("config") != "model_config_list":
            raise InvalidArgument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        remaining = context.time_remaining()
        self._reload(from_proto(request.config), timeout=remaining)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()
        return response

