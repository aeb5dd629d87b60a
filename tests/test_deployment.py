"""What Kubernetes relies on: probe URLs, autoscaling gauges, and a graceful stop at SIGTERM."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from onnx_serving.client import Client
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.flags import parse_flags
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port
from tests.test_observability import sample

METRICS = "/monitoring/prometheus/metrics"
# A batch waits this long for company: long enough to see requests queued.
BATCH_TIMEOUT_S = 2.0
DELAY_S = 2


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str, Path]]:
    """A server as the manifests run it (probes, metrics, a shutdown delay), with batching,
    and a model ``late`` that has no version yet."""
    root = tmp_path_factory.mktemp("deployed")
    late = root / "late"
    late.mkdir()
    config = root / "models.config"
    config.write_text(
        (EXAMPLES / "models.config").read_text().replace("models/", f"{EXAMPLES}/models/")
        .rstrip().removesuffix("}")
        + f'  config {{ name: "late" base_path: "{late}" model_platform: "onnx" }}\n}}\n'
    )
    params = root / "batching.config"
    params.write_text(f"max_batch_size {{ value: 64 }} batch_timeout_micros "
                      f"{{ value: {int(BATCH_TIMEOUT_S * 1e6)} }} num_batch_threads {{ value: 1 }}")
    monitoring = root / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    server = ServerProcess(
        [f"--model_config_file={config}", f"--rest_api_port={rest_port}",
         f"--monitoring_config_file={monitoring}", "--enable_grpc_healthcheck_service",
         "--enable_batching", f"--batching_parameters_file={params}",
         f"--shutdown_delay_seconds={DELAY_S}", "--enable_model_warmup=false"],
        root / "server.log",
    ).start()
    yield server, f"http://127.0.0.1:{rest_port}", late
    server.stop()


def predict(server: ServerProcess, value: float) -> list[list[float]]:
    with Client(server.address) as client:
        y = client.predict("half_plus_two", {"x": np.array([[value]], np.float32)})["y"]
        return [[float(v) for v in row] for row in y.tolist()]


def test_ready_once_every_model_has_a_version(deployed) -> None:
    _, rest, late = deployed
    assert requests.get(f"{rest}/livez", timeout=5).status_code == 200
    answer = requests.get(f"{rest}/readyz", timeout=5)
    assert answer.status_code == 503
    assert answer.text == "not ready: no version available of late\n"
    shutil.copytree(EXAMPLES / "models" / "half_plus_two" / "123", late / "1")
    deadline = time.monotonic() + 30
    while requests.get(f"{rest}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "late never became ready"
        time.sleep(0.2)
    assert requests.get(f"{rest}/readyz", timeout=5).text == "ready\n"


def test_in_flight_and_queue_depth_per_model(deployed) -> None:
    server, rest, _ = deployed
    with ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(predict, server, float(i)) for i in range(3)]
        seen = {"in_flight": 0.0, "queued": 0.0}
        deadline = time.monotonic() + BATCH_TIMEOUT_S
        while time.monotonic() < deadline and min(seen.values()) < 3:
            text = requests.get(rest + METRICS, timeout=5).text
            seen["in_flight"] = max(seen["in_flight"], sample(
                text, ":onnx_serving:requests_in_flight", model_name="half_plus_two"))
            seen["queued"] = max(seen["queued"], sample(
                text, ":onnx_serving:batch_queue_depth", model_name="half_plus_two"))
            time.sleep(0.05)
        assert [a.result(timeout=30) for a in answers] == [[[2.0]], [[2.5]], [[3.0]]]
    assert seen == {"in_flight": 3.0, "queued": 3.0}
    text = requests.get(rest + METRICS, timeout=5).text
    assert sample(text, ":onnx_serving:requests_in_flight", model_name="half_plus_two") == 0
    assert sample(text, ":onnx_serving:batch_queue_depth", model_name="half_plus_two") == 0


def test_sigterm_turns_not_serving_answers_for_the_delay_then_exits_0(deployed) -> None:
    """Runs last in this module: it stops the server."""
    server, rest, _ = deployed
    assert server.process is not None
    health = health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService")
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        # A request in flight at SIGTERM: it is queued for a batch until after the signal.
        in_flight = ThreadPoolExecutor(1).submit(predict, server, 10.0)
        time.sleep(0.2)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert stub.Check(health, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert requests.get(f"{rest}/readyz", timeout=5).status_code == 503
        assert requests.get(f"{rest}/livez", timeout=5).status_code == 200
        # Still answering: a client that has not yet heard keeps being served.
        assert predict(server, 4.0) == [[4.0]]
        assert in_flight.result(timeout=30) == [[7.0]]
    code = server.process.wait(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0
    assert DELAY_S <= elapsed < DELAY_S + 6
    assert "--shutdown_delay_seconds" in server.logs()


def test_shutdown_delay_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="--shutdown_delay_seconds=-1 is not supported"):
        parse_flags(["--model_base_path=/x", "--shutdown_delay_seconds=-1"])
