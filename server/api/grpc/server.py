"""Builds the gRPC server: TF Serving's two services, its message limits and channel args.

Server reflection is on (v1 and v1alpha), describing our messages from our
private descriptor pool, so grpcurl lists and calls the services with no
.proto files at hand.
The standard health service is added with --enable_grpc_healthcheck_service.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pb2, text_format
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from onnx_serving.protos._pool import POOL
from onnx_serving.protos.tensorflow_serving.apis import (
    model_service_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from onnx_serving.server.api.grpc.model_service import ModelService, Reload
from onnx_serving.server.api.grpc.observe import ObserveRequests, model_of
from onnx_serving.server.api.grpc.prediction_service import PredictionService
from onnx_serving.server.api.grpc.streams import StreamSlots
from onnx_serving.server.api.grpc.unary import UnaryServer
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.metrics import Metrics
from onnx_serving.server.serving.core import ServingCore

log = logging.getLogger(__name__)

# What absl::SimpleAtoi takes for an int: optional spaces around an optional sign and digits.
_INT32 = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
# TF Serving's limit in both directions, not gRPC Python's 4 MB default.
MAX_MESSAGE_BYTES = 2**31 - 1
# The _pb2_grpc modules leave the services' own files unimported; reflection needs them.
SERVICES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in ((prediction_service_pb2, "PredictionService"),
                         (model_service_pb2, "ModelService"))
)
# The names TF Serving's health service reports, and the full ones standard probes use.
HEALTH_NAMES = ("", "ModelService", "PredictionService", *SERVICES)
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_REFLECTION_V1_FILE = "grpc/reflection/v1/reflection.proto"


@dataclass(frozen=True)
class Service:
    """Another protocol's service on this server (api/oip/): its full name, for health
    and reflection, and how it adds itself."""

    name: str
    add: Callable[[grpc.Server], None]


def parse_channel_arguments(raw: str) -> list[tuple[str, int | str]]:
    """``"k=v,k=v"`` as --grpc_channel_arguments takes it: a value that absl::SimpleAtoi
    reads as a 32-bit int is passed as that int, any other as a string (TF's server.cc)."""
    arguments: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"Invalid --grpc_channel_arguments entry '{item}': expected key=value"
            )
        value = value.split("=")[0]  # TF keeps what comes before a second '='
        if _INT32.fullmatch(value) and -(2**31) <= int(value) < 2**31:
            arguments.append((key, int(value)))
        else:
            arguments.append((key, value))
    return arguments


def build_server(
    core: ServingCore,
    *,
    reload: Reload,
    metrics: Metrics,
    reuse_port: bool = False,
    max_threads: int,
    max_streams: int,
    channel_arguments: str = "",
    tensor_content: bool = False,
    access_log: bool = False,
    health_servicer: health.HealthServicer | None = None,
    services: Sequence[Service] = (),
    install_prediction: Callable[[PredictionService, grpc.Server], None] | None = None,
    inline_cpu: float = 0.0,
) -> grpc.Server:
    """Both services answer through ``core``; ``metrics`` count requests as gRPC sees
    them (the interceptor). ``max_threads`` threads answer unary calls and ``max_streams``
    streaming calls, each kind on threads the other cannot take (see ``streams``).
    ``health_servicer``, when given, is served and its services are set SERVING: the server
    is built only once the initial models have loaded. ``services`` are served too.
    ``install_prediction``, when given, registers the PredictionService in place of the
    plain servicer (live shadowing). A model RPC whose calls cost at most ``inline_cpu``
    seconds of CPU is answered on the unary lane's poller (``unary``), unless it may wait
    on other calls: a shadowed PredictionService's (the caller gives 0 under batching)."""
    options: dict[str, int | str] = {
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        # gRPC Python shares ports by default, so a second server on a busy port would
        # start "fine" and split the traffic. Only --num_workers' processes share them.
        "grpc.so_reuseport": int(reuse_port),
    }
    options.update(parse_channel_arguments(channel_arguments))
    observe = ObserveRequests(metrics, access_log_enabled=access_log)
    server = UnaryServer(
        grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_threads + max_streams),
            options=list(options.items()),
            interceptors=[observe, StreamSlots(max_streams)],
        ),
        workers=max_threads, observe=observe.wrap,
        inline=lambda path: None if (
            install_prediction is not None and path.startswith(f"/{SERVICES[0]}/")
        ) else model_of(path),
        inline_cpu=inline_cpu,
    )
    prediction = PredictionService(core, tensor_content=tensor_content)
    if install_prediction is None:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    else:
        install_prediction(prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, reload), server)
    for service in services:
        service.add(server)
    names = [*SERVICES, *(service.name for service in services)]
    if health_servicer is not None:
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for name in [*HEALTH_NAMES, *(service.name for service in services)]:
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        names.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    names += [reflection.SERVICE_NAME, REFLECTION_V1]
    for file in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        _add_to_pool(file)
    _add_reflection_v1_to_pool()
    _serve_reflection(server, reflection.ReflectionServicer(names, pool=POOL))
    return server


def start(
    server: grpc.Server, *, port: int, socket_path: str = "",
    credentials: Callable[[], grpc.ServerCredentials] | None = None,
) -> None:
    """Binds ``server`` to ``port`` on every interface (--port, 0: none) and to the Unix
    socket ``socket_path`` (--grpc_socket_path), with TLS when ``credentials`` are given
    (called once per address: gRPC takes each one), then starts it. ConfigError names an
    address that cannot be had."""
    addresses = []
    if port:
        addresses.append(f"0.0.0.0:{port}")
    if socket_path:
        addresses.append(f"unix:{socket_path}")
    for address in addresses:
        try:
            bound = server.add_secure_port(address, credentials()) \
                if credentials is not None else server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"Cannot listen on {address}: {exc}") from exc
        if not bound and not address.startswith("unix:"):
            raise ConfigError(f"Cannot listen on {address}: the port is in use or unavailable")
    server.start()
    for address in addresses:
        log.info("Running gRPC ModelServer at %s ...", address)


def _serve_reflection(server: grpc.Server, servicer: reflection.ReflectionServicer) -> None:
    """Under v1alpha and v1: grpcurl and current clients ask v1 first. The two differ only
    in their package, so one servicer answers both with the same messages on the wire."""
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler})
        for service in (reflection.SERVICE_NAME, REFLECTION_V1)
    ])


def _add_reflection_v1_to_pool() -> None:
    """v1's file is v1alpha's under another package (grpcio-reflection ships only v1alpha)."""
    try:
        POOL.FindFileByName(_REFLECTION_V1_FILE)
        return
    except KeyError:
        pass
    alpha = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    alpha.ClearField("options")
    text = text_format.MessageToString(alpha).replace(
        reflection_pb2.DESCRIPTOR.package, REFLECTION_V1.rpartition(".")[0]
    )
    file = text_format.Parse(text, descriptor_pb2.FileDescriptorProto())
    file.name = _REFLECTION_V1_FILE
    POOL.Add(file)


def _add_to_pool(file: FileDescriptor) -> None:
    """Our pool must describe the health and reflection services too, for reflection."""
    try:
        POOL.FindFileByName(file.name)
    except KeyError:
        POOL.AddSerializedFile(file.serialized_pb)
