"""``onnx-serving tune`` on a small model: it runs real servers under load, writes reports
that parse and a runtime config that the server loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_serving.client import Client
from onnx_serving.server.runtime import config as runtime_config
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.tune.load import Result
from onnx_serving.tune.report import Row, best
from onnx_serving.tune.settings import Setting, grid, parse_batching
from tests.models import add_constant
from tests.server_process import ServerProcess


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("tune")
    base = root / "plus_one"
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.onnx").write_bytes(add_constant(1).SerializeToString())
    out = root / "out"
    done = subprocess.run(
        [sys.executable, "-m", "onnx_serving.server", "tune", f"--model_base_path={base}",
         "--clients=2", "--duration=0.4", "--warmup=0.1", "--rounds=1", "--instances=1",
         "--spinning=off", "--batching=none",
         "--batching=max_batch_size=4,batch_timeout_micros=0,num_batch_threads=1",
         f"--output_dir={out}", "--apply"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return base, out, done.stdout


def test_tune_prints_a_row_per_setting_and_writes_reports(tuned: tuple[Path, Path, str]) -> None:
    _, out, stdout = tuned
    labels = ["default", "inst=1 nospin",
              "inst=1 nospin batch(max_batch_size=4,batch_timeout_micros=0,num_batch_threads=1)"]
    for label in labels:
        assert f"| {label} |" in stdout
    assert "BEST" in stdout
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == labels
    assert all(r["throughput"] > 0 and r["errors"] == 0 for r in report["rows"])
    assert report["best"] in labels
    assert (out / "latency_vs_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and page.count("<tr") == len(labels) + 1
    assert (out / "report.md").read_text().count("\n| ") == len(labels) + 2  # head, rule


def test_the_best_setting_is_a_runtime_config_the_server_loads(
    tuned: tuple[Path, Path, str], tmp_path: Path,
) -> None:
    base, out, _ = tuned
    written = json.loads((out / "runtime.json").read_text())
    assert json.loads((base / "runtime.json").read_text()) == written  # --apply
    runtime_config.merge_file(RuntimeConfig(), out / "runtime.json")  # valid as it is
    batched = (out / "batching_params.pbtxt").exists()
    assert batched == (base / "1" / "batching_params.pbtxt").exists()
    flags = [f"--model_base_path={base}", "--model_name=plus_one"]
    if batched:
        flags += ["--enable_batching", "--enable_per_model_batching_parameters"]
    server = ServerProcess(flags, tmp_path / "server.log").start()
    try:
        with Client(server.address) as client:
            y = client.predict("plus_one", {"x": np.array([[1.0]], np.float32)})["y"]
        assert y.tolist() == [[2.0]]
        assert "instance(s)" in server.logs()
    finally:
        server.stop()


def test_best_respects_the_latency_budget_and_skips_errors() -> None:
    def row(label: str, p99: float, throughput: float, errors: int = 0) -> Row:
        result = Result([p99 / 1000] * int(throughput), seconds=1.0, errors=errors)
        return Row.of(Setting(instances=len(label)), result, 2, label=label)

    rows = [row("fast", 50.0, 300), row("steady", 9.0, 200), row("broken", 1.0, 400, errors=1)]
    assert best(rows, None).label == "fast"  # type: ignore[union-attr]
    assert best(rows, 10.0).label == "steady"  # type: ignore[union-attr]
    assert best(rows, 0.5) is None


def test_grid_starts_with_the_default_and_parses_batching() -> None:
    # On 2 cores, "nospin" and "inst=2 nospin" run as the default does.
    settings = grid([None, 2, 1], [None, 2], [None], [False], [None],
                    [(), parse_batching("none")], 2)
    assert [s.label for s in settings] == ["default", "intra=2 nospin", "inst=2 intra=2 nospin"]
    assert Setting(instances=2, intra_op_threads=2).busy_threads(2) == 3  # oversubscribed
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_batching("max_batch=8")


def test_requests_come_from_a_warmup_file_pointed_at_the_model(tmp_path: Path) -> None:
    from onnx_serving.client import make_tensor_proto
    from onnx_serving.codec.tfrecord import write_records
    from onnx_serving.protos.tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    from onnx_serving.tune.load import from_file

    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "elsewhere"
    log.predict_log.request.model_spec.version.value = 3
    log.predict_log.request.inputs["x"].CopyFrom(make_tensor_proto(np.ones((2, 1), np.float32)))
    path = tmp_path / "tf_serving_warmup_requests"
    write_records(path, [log.SerializeToString()])
    [request] = [predict_pb2.PredictRequest.FromString(r) for r in from_file(path, "plus_one")]
    assert request.model_spec.name == "plus_one" and not request.model_spec.HasField("version")
    assert list(request.inputs) == ["x"]
