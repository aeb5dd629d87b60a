"""Starting and stopping the real server process the ways deployments do."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.models import EXAMPLES
from tests.server_process import ServerProcess

HALF_PLUS_TWO = EXAMPLES / "models" / "half_plus_two"


def predict_half_plus_two(target: str, name: str = "default") -> predict_pb2.PredictResponse:
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], shape=[1]))
        return stub.Predict(request, timeout=10)


def run_failing(*flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "onnx_serving.server", "serve", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_single_model_flags_uds_channel_args_and_sigterm(tmp_path: Path) -> None:
    """TF Serving's testPredictUDS and testGoodGrpcChannelArgs, and a clean SIGTERM."""
    socket = tmp_path / "tf-serving.sock"
    server = ServerProcess(
        [
            f"--model_base_path={HALF_PLUS_TWO}",
            f"--grpc_socket_path={socket}",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
            "--grpc_max_threads=4",
        ],
        tmp_path / "server.log",
    ).start()
    try:
        assert list(predict_half_plus_two(server.address).outputs["y"].float_val) == [3.0]
        assert list(predict_half_plus_two(f"unix:{socket}").outputs["y"].float_val) == [3.0]
        assert f"Running gRPC ModelServer at 0.0.0.0:{server.port} ..." in server.logs()
    finally:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
        server.stop()
    assert "Received SIGTERM, shutting down" in server.logs()


def test_tensor_content_responses(tmp_path: Path) -> None:
    server = ServerProcess(
        [f"--model_base_path={HALF_PLUS_TWO}", "--enable_serialization_as_tensor_content=true"],
        tmp_path / "server.log",
    ).start()
    try:
        output = predict_half_plus_two(server.address).outputs["y"]
        assert output.tensor_content and not output.float_val
        assert tf.make_ndarray(output).tolist() == [3.0]
    finally:
        server.stop()


def test_bad_config_file_stops_start_up_with_file_and_line(tmp_path: Path) -> None:
    """TF Serving's testBadModelConfig, plus where the error is."""
    config = tmp_path / "bad.config"
    config.write_text("improperly formatted file\n")
    result = run_failing(f"--model_config_file={config}")
    assert result.returncode != 0
    assert "Failed to start server. Error: " in result.stderr
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr
    assert f"{config}:1:" in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--use_alts_credentials"], "Flag --use_alts_credentials=true is not supported: ALTS"),
        (["--bogus=1"], "Unknown command line flag 'bogus'"),
        ([], "Both server_model_config_file and model_base_path are empty!"),
    ],
)
def test_refused_start_up(flags: list[str], message: str) -> None:
    result = run_failing("--port=0", "--grpc_socket_path=/tmp/unused.sock", *flags)
    assert result.returncode == 1
    assert message in result.stderr


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    first = ServerProcess([f"--model_base_path={HALF_PLUS_TWO}"], tmp_path / "a.log").start()
    try:
        result = run_failing(f"--port={first.port}", f"--model_base_path={HALF_PLUS_TWO}")
        assert result.returncode == 1
        assert f"Cannot listen on 0.0.0.0:{first.port}" in result.stderr
    finally:
        first.stop()
