"""--num_workers: several processes behind one port, stopped together."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from onnx_serving.client import Client
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port


def test_workers_share_the_ports_and_stop_together(tmp_path: Path) -> None:
    rest_port = free_port()
    server = ServerProcess(
        [f"--model_config_file={EXAMPLES / 'models.config'}", "--num_workers=2",
         f"--rest_api_port={rest_port}"],
        tmp_path / "server.log",
    ).start()
    try:
        x = np.array([[2.0]], np.float32)
        for _ in range(20):  # a new connection each time: the kernel picks a worker
            with Client(server.address) as client:
                assert client.predict("half_plus_two", {"x": x})["y"].tolist() == [[3.0]]
            answer = requests.post(
                f"http://127.0.0.1:{rest_port}/v1/models/half_plus_three:predict",
                json={"instances": [2.0]}, timeout=30,
            )
            assert answer.json() == {"predictions": [4.0]}
        request = model_management_pb2.ReloadConfigRequest()
        request.config.model_config_list.SetInParent()
        with grpc.insecure_channel(server.address) as channel, \
                pytest.raises(grpc.RpcError) as info:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, 10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--num_workers" in info.value.details()
    finally:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        server.stop()
    logs = server.logs()
    assert logs.count("Running gRPC ModelServer at 0.0.0.0:") == 2
    assert "Started 2 worker processes" in logs
    assert logs.count("Received SIGTERM, shutting down") == 2
