"""--num_workers: several processes behind one port, one metrics view, reloads reaching all,
stopped together."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from onnx_serving.client import Client, ServingError
from onnx_serving.server.repository.model_config import ModelConfig, read_config_file, to_text
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


def worker_pids(server: ServerProcess) -> list[int]:
    found = re.search(r"Started 2 worker processes: \[(\d+), (\d+)\]", server.logs())
    assert found, server.logs()
    return [int(found.group(1)), int(found.group(2))]


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's reaper may be slow, or absent in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def two_workers(tmp_path: Path) -> ServerProcess:
    return ServerProcess(
        [f"--model_base_path={EXAMPLES / 'models' / 'half_plus_two'}", "--num_workers=2"],
        tmp_path / "server.log",
    ).start()


def test_a_worker_killed_fails_the_server(tmp_path: Path) -> None:
    server = two_workers(tmp_path)
    try:
        killed, other = worker_pids(server)
        os.kill(killed, signal.SIGKILL)
        assert server.process is not None
        assert server.process.wait(timeout=60) == 128 + signal.SIGKILL  # not a clean exit
        assert not alive(other)
        assert f"Worker {killed} was killed by SIGKILL; stopping the others" in server.logs()
    finally:
        server.stop()


def test_workers_refuse_ports_another_server_holds(tmp_path: Path) -> None:
    """Workers share their ports, so a second server started on the same ones by mistake
    would take part of the first one's traffic: it is refused instead."""
    server = two_workers(tmp_path)
    try:
        second = ServerProcess(
            [f"--model_base_path={EXAMPLES / 'models' / 'half_plus_two'}", "--num_workers=2"],
            tmp_path / "second.log", port=server.port,
        )
        refused = subprocess.run(second.command(), capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1
        assert f"Cannot listen on 0.0.0.0:{server.port}" in refused.stderr
        with Client(server.address) as client:
            assert client.predict("default", {"x": np.array([[2.0]], np.float32)}
                                  )["y"][0, 0] == 3.0
    finally:
        server.stop()


def test_workers_die_with_their_supervisor(tmp_path: Path) -> None:
    server = two_workers(tmp_path)
    try:
        pids = worker_pids(server)
        assert server.process is not None
        server.process.kill()  # SIGKILL: the supervisor can relay nothing
        server.process.wait()
        wait_until(lambda: not any(alive(pid) for pid in pids))
        with socket.socket() as probe:  # nobody holds the port
            probe.bind(("0.0.0.0", server.port))
    finally:
        server.stop()


def test_sighup_stops_the_workers_like_sigterm(tmp_path: Path) -> None:
    server = two_workers(tmp_path)
    try:
        pids = worker_pids(server)
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        assert server.process.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in pids)
        assert "Received SIGHUP, stopping the workers" in server.logs()
        assert server.logs().count("Received SIGTERM, shutting down") == 2  # each drained
    finally:
        server.stop()
