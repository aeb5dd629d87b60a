"""Metrics after known traffic, gRPC health, server reflection and the access log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from onnx_serving.client import Client, ServingError
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port

TIMEOUT = 30


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    tmp = tmp_path_factory.mktemp("observed")
    monitoring = tmp / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true path: "/metrics/here" }')
    # The examples' models, half_plus_three's only version (123) labelled "stable".
    config = tmp / "models.config"
    config.write_text(f"""model_config_list {{
      config {{ name: "half_plus_two" base_path: "{EXAMPLES / 'models/half_plus_two'}"
               model_platform: "onnx" }}
      config {{ name: "half_plus_three" base_path: "{EXAMPLES / 'models/half_plus_three'}"
               model_platform: "onnx" version_labels {{ key: "stable" value: 123 }} }}
    }}""")
    rest_port = free_port()
    server = ServerProcess(
        [
            f"--model_config_file={config}",
            f"--rest_api_port={rest_port}",
            f"--monitoring_config_file={monitoring}",
            "--enable_grpc_healthcheck_service",
            "--enable_access_log",
        ],
        tmp / "server.log",
    ).start()
    yield server, rest_port
    server.stop()


def scrape(rest_port: int, path: str = "/metrics/here") -> str:
    response = requests.get(f"http://127.0.0.1:{rest_port}{path}", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples with this name and these labels (other labels ignored)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"([^{ ]+)(?:\{(.*)\})? (\S+)", line)
        if line.startswith("#") or match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_metrics_count_known_traffic(observed) -> None:
    server, rest_port = observed
    before = scrape(rest_port)
    x = np.array([[2.0]], np.float32)
    with Client(server.address) as client:
        for _ in range(3):
            client.predict("half_plus_two", {"x": x})
        for _ in range(2):
            with pytest.raises(ServingError):
                client.predict("half_plus_two", {"nope": x})
    for _ in range(4):
        requests.post(f"http://127.0.0.1:{rest_port}/v1/models/half_plus_three:predict",
                      json={"instances": [1.0]}, timeout=TIMEOUT).raise_for_status()
    after = scrape(rest_port)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    count = ":tensorflow:serving:request_count"
    assert delta(count, model_name="half_plus_two", status="OK") == 3
    assert delta(count, model_name="half_plus_two", status="INVALID_ARGUMENT") == 2
    assert delta(count, model_name="half_plus_three", status="OK") == 4
    latency = ":tensorflow:serving:request_latency_count"
    assert delta(latency, model_name="half_plus_two", API="Predict", entrypoint="GRPC") == 3
    # TF Serving labels REST latency by the path's method, runtime latency by the API.
    assert delta(latency, model_name="half_plus_three", API="predict", entrypoint="REST") == 4
    for stage in ("decode", "run", "encode"):
        assert delta(":onnx_serving:request_stage_latency_count", model_name="half_plus_two",
                     entrypoint="GRPC", stage=stage) == 3
    assert delta(":tensorflow:serving:runtime_latency_count", model_name="half_plus_three",
                 API="Predict", runtime="ONNXRuntime") == 4
    # TF prints bucket bounds with six significant digits.
    assert 'le="32.4"' in after and 'le="1.47476e+09"' in after
    assert not re.search(r'le="[0-9.]{9,}', after)

    assert "# TYPE :tensorflow:serving:request_count counter" in after
    assert "# TYPE :tensorflow:serving:request_latency histogram" in after
    assert "_total" not in after and "_created" not in after  # TF's naming
    assert sample(after, ":onnx_serving:model_versions_available", model_name="half_plus_two") == 1
    assert sample(after, ":onnx_serving:execution_provider", model_name="half_plus_two",
                  provider="CPUExecutionProvider") == 1
    assert sample(after, ":onnx_serving:model_load_latency_count", model_name="half_plus_two",
                  status="OK") == 1
    # No warmup file: no warmup to time, as in TF Serving (tests/test_warmup.py has some).
    assert ":tensorflow:serving:model_warmup_latency_count" not in after


def test_metrics_only_at_the_configured_path(observed) -> None:
    _, rest_port = observed
    response = requests.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics",
                            timeout=TIMEOUT)
    assert response.status_code == 404


def test_health_service(observed) -> None:
    server, _ = observed
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ModelService", "PredictionService",
                        "tensorflow.serving.PredictionService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_our_services(observed) -> None:
    server, _ = observed
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
                "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("tensorflow.serving.PredictionService")
        predict = service.methods_by_name["Predict"]
        assert predict.input_type.full_name == "tensorflow.serving.PredictRequest"
        request = pool.FindMessageTypeByName("tensorflow.serving.PredictRequest")
        assert {f.name: f.number for f in request.fields}["output_filter"] == 3
        tensor = pool.FindMessageTypeByName("tensorflow.TensorProto")
        assert tensor.fields_by_name["float_val"].number == 5


def test_reflection_v1_and_v1alpha(observed) -> None:
    """grpcurl asks v1 first; both packages share one wire format, so v1alpha's messages
    are sent on v1's method."""
    server, _ = observed
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(server.address) as channel:
        for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            call = channel.stream_stream(
                f"/{package}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            (response,) = list(call(iter([request]), timeout=5))
            names = {s.name for s in response.list_services_response.service}
            assert {"tensorflow.serving.PredictionService",
                    "grpc.reflection.v1.ServerReflection"} <= names, package
            symbol = reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="grpc.reflection.v1.ServerReflection"
            )
            (described,) = list(call(iter([symbol]), timeout=5))
            file = descriptor_pb2.FileDescriptorProto.FromString(
                described.file_descriptor_response.file_descriptor_proto[0]
            )
            assert file.package == "grpc.reflection.v1"


def access_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.logs().splitlines() if "onnx_serving.access" in line]


def test_access_log_has_one_line_per_request(observed) -> None:
    """Each transport's line for this test's own requests, naming the version that answered
    (a line is written before its answer is sent, so it is there once the answer is)."""
    server, rest_port = observed
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_three"
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([7.0]))
    before = len(access_lines(server))
    with grpc.insecure_channel(server.address) as channel:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=5)
    for path in ("labels/stable", "versions/123", "labels/unknown"):
        requests.post(f"http://127.0.0.1:{rest_port}/v1/models/half_plus_three/{path}:predict",
                      json={"instances": [1.0]}, timeout=TIMEOUT)
    lines = access_lines(server)[before:]
    assert len(lines) == 4
    grpc_line = "grpc Predict model=half_plus_three version=123 signature=serving_default status=OK"
    assert f"{grpc_line} ms=" in lines[0]
    assert "rest predict model=half_plus_three version=123 status=OK ms=" in lines[1]
    assert "rest predict model=half_plus_three version=123 status=OK ms=" in lines[2]
    # No version answered: none is named (the label asked for is in the error answer).
    assert "rest predict model=half_plus_three version= status=INVALID_ARGUMENT ms=" in lines[3]


def test_monitoring_needs_the_rest_port(tmp_path: Path) -> None:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    server = ServerProcess(
        [f"--model_base_path={EXAMPLES / 'models/half_plus_two'}",
         f"--monitoring_config_file={monitoring}"],
        tmp_path / "server.log",
    )
    with pytest.raises(RuntimeError, match="set --rest_api_port too"):
        server.start()
