"""Builds the gRPC server: TF Serving's two services, its message limits and channel args."""

from __future__ import annotations

from concurrent import futures

import grpc

from onnx_serving.protos.tensorflow_serving.apis import (
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from onnx_serving.server.api.grpc.model_service import ModelService, Reload
from onnx_serving.server.api.grpc.prediction_service import PredictionService
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.runtime.model import LoadedModel

# TF Serving's limit in both directions, not gRPC Python's 4 MB default.
MAX_MESSAGE_BYTES = 2**31 - 1


def parse_channel_arguments(raw: str) -> list[tuple[str, int | str]]:
    """``"k=v,k=v"`` as --grpc_channel_arguments takes it; numbers become ints."""
    arguments: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"Invalid --grpc_channel_arguments entry '{item}': expected key=value"
            )
        try:
            arguments.append((key, int(value)))
        except ValueError:
            arguments.append((key, value))
    return arguments


def build_server(
    manager: ModelManager[LoadedModel],
    *,
    reload: Reload,
    max_threads: int,
    channel_arguments: str = "",
    tensor_content: bool = False,
) -> grpc.Server:
    options: dict[str, int | str] = {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        # gRPC Python shares ports by default, so a second server on a busy port would
        # start "fine" and split the traffic. Opt back in with grpc.so_reuseport=1.
        "grpc.so_reuseport": 0,
    }
    options.update(parse_channel_arguments(channel_arguments))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads), options=list(options.items())
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(manager, tensor_content=tensor_content), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(manager, reload), server
    )
    return server
