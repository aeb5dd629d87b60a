"""Metrics by the version that answered: canary traffic is visible, TF's metrics unchanged."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.models import add_constant
from tests.server_process import ServerProcess, free_port
from tests.test_observability import sample

TIMEOUT = 30


def predict(stub: prediction_service_pb2_grpc.PredictionServiceStub, **spec: object) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "versions"
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value  # type: ignore[assignment]
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[0.0]], np.float32)))
    return stub.Predict(request, timeout=TIMEOUT).outputs["y"].float_val[0]


def test_requests_are_counted_by_the_version_that_answered(tmp_path: Path) -> None:
    for version in (1, 2):
        (tmp_path / "versions" / str(version)).mkdir(parents=True)
        (tmp_path / "versions" / str(version) / "model.onnx").write_bytes(
            add_constant(version).SerializeToString())
    config = tmp_path / "models.config"
    config.write_text(f"""model_config_list {{ config {{
      name: "versions" base_path: "{tmp_path / 'versions'}" model_platform: "onnx"
      model_version_policy {{ all {{}} }}
      version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }}
    }} }}""")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    server = ServerProcess(
        [f"--model_config_file={config}", f"--rest_api_port={rest_port}",
         f"--monitoring_config_file={monitoring}"], tmp_path / "server.log",
    ).start()
    rest = f"http://127.0.0.1:{rest_port}"
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert [predict(stub, version_label="stable") for _ in range(3)] == [1.0] * 3
            assert [predict(stub, version_label="canary") for _ in range(2)] == [2.0] * 2
            assert predict(stub) == 2.0  # the latest
            with pytest.raises(grpc.RpcError) as caught:
                predict(stub, version=1, signature_name="nope")
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        answer = requests.post(f"{rest}/v1/models/versions/labels/canary:predict",
                               json={"instances": [[0.0]]}, timeout=TIMEOUT)
        assert answer.json() == {"predictions": [[2.0]]}
        text = requests.get(f"{rest}/monitoring/prometheus/metrics", timeout=TIMEOUT).text
    finally:
        server.stop()

    def by_version(version: str, status: str) -> float:
        return sample(text, ":onnx_serving:version_request_count", model_name="versions",
                      version=version, status=status)

    assert by_version("1", "OK") == 3 and by_version("2", "OK") == 4
    assert by_version("1", "FAILED_PRECONDITION") == 1
    assert sample(text, ":onnx_serving:version_request_latency_count",
                  model_name="versions", version="2") == 4
    assert "# TYPE :onnx_serving:version_request_count counter" in text
    # TF Serving's own metric is as it was: by model and status only.
    assert sample(text, ":tensorflow:serving:request_count", model_name="versions",
                  status="OK") == 7
    assert 'version=' not in "".join(
        line for line in text.splitlines() if line.startswith(":tensorflow:"))
