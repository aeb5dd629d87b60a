"""--enable_batching in the real server: requests merge, each caller gets its own rows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import requests

from onnx_serving.client import Client
from tests.concurrency import run_concurrently
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port
from tests.test_observability import sample


def test_concurrent_requests_are_batched_and_answered_each(tmp_path: Path) -> None:
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 20000 } "
                      "num_batch_threads { value: 1 } max_enqueued_batches { value: 100 }")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    server = ServerProcess(
        [f"--model_config_file={EXAMPLES / 'models.config'}", "--enable_batching",
         f"--batching_parameters_file={params}", f"--rest_api_port={rest_port}",
         f"--monitoring_config_file={monitoring}"],
        tmp_path / "server.log",
    ).start()
    errors: list[str] = []
    try:
        def client(index: int) -> None:
            with Client(server.address) as c:
                for step in range(10):
                    x = np.array([[index * 100.0 + step], [step]], np.float32)
                    y = c.predict("half_plus_two", {"x": x}, output_filter=["y"])["y"]
                    if y.tolist() != (0.5 * x + 2).tolist():
                        errors.append(f"client {index}: {y.tolist()} for {x.tolist()}")

        run_concurrently(client, 16)
        assert errors == []
        text = requests.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics",
                            timeout=10).text
    finally:
        server.stop()
    batches = sample(text, ":onnx_serving:batch_size_count", model_name="half_plus_two")
    rows = sample(text, ":onnx_serving:batch_size_sum", model_name="half_plus_two")
    assert rows >= 320  # every request's two rows went through a batch (warmup aside)
    assert batches < 160  # so batches held more than one request on average
    # TF Serving's labels: none on the run count, sizes and inputs (each request's rows).
    assert sample(text, ":tensorflow:serving:batching_session:wrapped_run_count") == batches
    assert sample(text, ":tensorflow:serving:batching_session:processed_batch_size_count") \
        == batches
    assert sample(text, ":tensorflow:serving:batching_session:input_batch_size_sum") == rows
    padding = ":tensorflow:serving:batching_session:padding_size_count"
    assert re.search(padding + r'\{execution_batch_size="\d+"\}', text)
    assert sample(text, ":tensorflow:serving:batching_session:queuing_latency_count",
                  thread_pool_name="batch_threads") >= 160
    assert sample(text, ":onnx_serving:request_stage_latency_count", model_name="half_plus_two",
                  stage="queue") >= 160


def test_parameters_file_needs_enable_batching(tmp_path: Path) -> None:
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }")
    command = [sys.executable, "-m", "onnx_serving.server", "serve", "--port=0",
               f"--grpc_socket_path={tmp_path / 's.sock'}",
               f"--model_base_path={EXAMPLES / 'models/half_plus_two'}",
               f"--batching_parameters_file={params}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "batching_parameters_file is set without setting server_options.enable_batching" \
        in result.stderr
