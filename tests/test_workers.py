"""--num_workers: several processes behind one port, one metrics view, reloads reaching all,
stopped together."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import numpy as np
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from onnx_serving.client import Client, ServingError
from onnx_serving.server.config import ModelConfig, read_config_file, to_text
from onnx_serving.server.repository.policy import All, Latest, Specific
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port
from tests.test_observability import sample

ROUNDS = 20  # a new connection each time: the kernel picks a worker


def test_workers_share_ports_metrics_and_reloads_and_stop_together(tmp_path: Path) -> None:
    rest_port = free_port()
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    config = tmp_path / "models.config"
    config.write_text((EXAMPLES / "models.config").read_text().replace(
        "models/", f"{EXAMPLES}/models/"))
    server = ServerProcess(
        [f"--model_config_file={config}", "--num_workers=2", f"--rest_api_port={rest_port}",
         f"--monitoring_config_file={monitoring}", "--model_config_file_poll_wait_seconds=1"],
        tmp_path / "server.log",
    ).start()
    rest = f"http://127.0.0.1:{rest_port}"
    try:
        x = np.array([[2.0]], np.float32)
        for _ in range(ROUNDS):
            with Client(server.address) as client:
                assert client.predict("half_plus_two", {"x": x})["y"].tolist() == [[3.0]]
            answer = requests.post(f"{rest}/v1/models/half_plus_three:predict",
                                   json={"instances": [2.0]}, timeout=30)
            assert answer.json() == {"predictions": [4.0]}
        # Whichever worker answers the scrape counts every worker's requests.
        for _ in range(4):
            text = requests.get(f"{rest}/monitoring/prometheus/metrics", timeout=10).text
            assert sample(text, ":tensorflow:serving:request_count",
                          model_name="half_plus_two", status="OK") == ROUNDS
            assert sample(text, ":tensorflow:serving:request_count",
                          model_name="half_plus_three", status="OK") == ROUNDS
            assert sample(text, ":onnx_serving:model_versions_available",
                          model_name="half_plus_two") == 1
            assert sample(text, ":onnx_serving:requests_in_flight",
                          model_name="half_plus_two") == 0

        # A reload answered by one worker is applied by every worker before the reply.
        request = model_management_pb2.ReloadConfigRequest()
        entry = request.config.model_config_list.config.add(
            name="only_three", base_path=str(EXAMPLES / "models" / "half_plus_three"),
            model_platform="onnx")
        entry.model_version_policy.all.SetInParent()
        with grpc.insecure_channel(server.address) as channel:
            reply = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                request, 60)
        assert reply.status.error_code == 0
        for _ in range(ROUNDS):
            with Client(server.address) as client:
                assert client.predict("only_three", {"x": x})["y"].tolist() == [[4.0]]
            assert requests.get(f"{rest}/readyz", timeout=10).status_code == 200

        # A changed config file is applied by every worker (each polls it).
        config.write_text(to_text([ModelConfig("renamed", EXAMPLES / "models" / "half_plus_two")]))
        deadline = time.monotonic() + 30
        answered = 0
        while answered < ROUNDS:  # in a row, over new connections
            assert time.monotonic() < deadline, "not every worker applied the changed file"
            with Client(server.address) as client:
                try:
                    assert client.predict("renamed", {"x": x})["y"].tolist() == [[3.0]]
                    answered += 1
                except ServingError:
                    answered = 0
                    time.sleep(0.2)
    finally:
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        server.stop()
    logs = server.logs()
    assert logs.count("Running gRPC ModelServer at 0.0.0.0:") == 2
    assert "Started 2 worker processes" in logs
    assert logs.count("Another worker reloaded the model config; applying it here") == 1
    assert logs.count("Received SIGTERM, shutting down") == 2


def test_a_config_written_for_the_workers_reads_back_the_same(tmp_path: Path) -> None:
    configs = [
        ModelConfig("a", tmp_path / "a"),
        ModelConfig("b", tmp_path / "b", All(), {"stable": 1}),
        ModelConfig("c", tmp_path / "c", Specific(frozenset({3, 1}))),
        ModelConfig("d", tmp_path / "d", Latest(2)),
    ]
    path = tmp_path / "models.config"
    path.write_text(to_text(configs))
    assert read_config_file(path) == configs
