"""Request logging (a model's logging_config) on the real server, files read back.

Predict, Classify, Regress and MultiInference come from TF Serving's own client,
Predict over REST too; the files are TFRecord PredictionLog, rotated and bounded,
and serve unchanged as a warmup file (a new version warms up with one) and as
``onnx-serving compare --requests``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from onnx_serving.codec.prediction_log import read_prediction_logs
from onnx_serving.codec.tensors import make_ndarray
from onnx_serving.server.repository.model_config import ModelConfig, RequestLogConfig
from onnx_serving.server.request_log import RequestLogOptions, RequestLogs
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port

TIMEOUT = 10
CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"
MAX_FILES = 2
MAX_FILE_BYTES = 4000


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def records(prefix: Path) -> list:
    return [r for path in files(prefix) for r in read_prediction_logs(path)]


def files(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(f"{prefix.name}-*.tfrecord"))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int, Path,
                                                                         Path]]:
    tmp = tmp_path_factory.mktemp("request_log")
    base = tmp / "half_plus_two"
    shutil.copytree(EXAMPLES / "models/half_plus_two", base)
    prefix = tmp / "logs" / "half_plus_two"
    config = tmp / "models.config"
    config.write_text(f"""model_config_list {{
      config {{
        name: "logged" base_path: "{base}" model_platform: "onnx"
        logging_config {{
          log_collector_config {{ type: "" filename_prefix: "{prefix}" }}
          sampling_config {{ sampling_rate: 1.0 }}
        }}
      }}
      config {{ name: "quiet" base_path: "{EXAMPLES / 'models/half_plus_three'}" }}
    }}""")
    monitoring = tmp / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    server = ServerProcess(
        [f"--model_config_file={config}", f"--rest_api_port={rest_port}",
         f"--monitoring_config_file={monitoring}", "--file_system_poll_wait_seconds=1",
         f"--request_log_max_files={MAX_FILES}", f"--request_log_max_file_bytes={MAX_FILE_BYTES}"],
        tmp / "server.log",
    ).start()
    yield server, rest_port, prefix, base
    server.stop()


def predict(stub: prediction_service_pb2_grpc.PredictionServiceStub, model: str,
            values: list[float], **spec: object) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return stub.Predict(request, timeout=TIMEOUT)


def classify_regress_multi(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    example = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0]))}))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = "logged", "classify_x_to_y"
    classify.input.example_list.examples.add().CopyFrom(example)
    assert stub.Classify(classify, timeout=TIMEOUT).result.classifications[0].classes[0].score \
        == 3.0
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "logged", "regress_x_to_y"
    regress.input.example_list.examples.add().CopyFrom(example)
    assert stub.Regress(regress, timeout=TIMEOUT).result.regressions[0].value == 3.0
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", CLASSIFY), ("regress_x_to_y", REGRESS)):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "logged", signature
    multi.input.example_list.examples.add().CopyFrom(example)
    assert len(stub.MultiInference(multi, timeout=TIMEOUT).results) == 2


def test_sampled_requests_are_logged_with_their_responses(logged, tmp_path: Path) -> None:
    server, rest_port, prefix, base = logged
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(5):
            predict(stub, "logged", [float(i), 10.0 + i])
        predict(stub, "quiet", [1.0])  # no logging_config: not logged
        with pytest.raises(grpc.RpcError):  # failed requests are not logged
            predict(stub, "logged", [1.0], signature_name="nope")
        classify_regress_multi(stub)
    answer = requests.post(f"http://127.0.0.1:{rest_port}/v1/models/logged:predict",
                           json={"instances": [7.0]}, timeout=TIMEOUT)
    assert answer.json() == {"predictions": [5.5]}
    wait_for(lambda: len(records(prefix)) == 9)

    logs = records(prefix)
    assert [r.WhichOneof("log_type") for r in logs] == ["predict_log"] * 5 + [
        "classify_log", "regress_log", "multi_inference_log", "predict_log"]
    classified, regressed, multi = (logs[5].classify_log, logs[6].regress_log,
                                    logs[7].multi_inference_log)
    x = classified.request.input.example_list.examples[0].features.feature["x"]
    assert list(x.float_list.value) == [2.0]
    assert classified.request.model_spec.signature_name == "classify_x_to_y"
    assert classified.response.result.classifications[0].classes[0].score == 3.0
    assert [r.value for r in regressed.response.result.regressions] == [3.0]
    assert [t.method_name for t in multi.request.tasks] == [CLASSIFY, REGRESS]
    assert len(multi.response.results) == 2
    for i, entry in enumerate(logs[:5]):
        request, response = entry.predict_log.request, entry.predict_log.response
        assert request.model_spec.name == "logged"
        x = make_ndarray(request.inputs["x"])
        np.testing.assert_array_equal(x, [float(i), 10.0 + i])
        np.testing.assert_array_equal(make_ndarray(response.outputs["y"]), x / 2 + 2)
        assert response.model_spec.version.value == 123
        assert entry.log_metadata.sampling_config.sampling_rate == 1.0
        assert entry.log_metadata.timestamp_secs > 0
    np.testing.assert_array_equal(make_ndarray(logs[8].predict_log.request.inputs["x"]), [7.0])

    assert written(rest_port) == 9

    # Unchanged, a log file is onnx-serving compare's request set...
    from onnx_serving.migration import compare

    (log_file,) = files(prefix)
    report = tmp_path / "report"
    assert compare.main([
        f"--baseline={server.address}", f"--candidate={server.address}",
        "--model_name=logged", f"--requests={log_file}", "--rounds=0",
        f"--report_dir={report}",
    ]) == 0
    # ...and a warmup file: version 124 replays it before serving.
    staging = base.parent / "staging"
    shutil.copytree(base / "123", staging)
    (staging / "assets.extra").mkdir()
    shutil.copy(log_file, staging / "assets.extra" / "tf_serving_warmup_requests")
    staging.rename(base / "124")
    replayed = len(list(read_prediction_logs(base / "124" / "assets.extra" /
                                             "tf_serving_warmup_requests")))
    wait_for(lambda: f"Number of warmup records read: {replayed}." in server.logs())


def written(rest_port: int) -> int:
    metrics = requests.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics",
                           timeout=TIMEOUT).text
    found = re.search(r':onnx_serving:request_log_records\{model_name="logged",'
                      r'outcome="written"\} (\S+)', metrics)
    return int(float(found.group(1))) if found else 0


def test_logs_rotate_by_size_and_stay_bounded(logged) -> None:
    server, rest_port, prefix, _ = logged
    before = written(rest_port)
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(60):
            predict(stub, "logged", [1.0])
    wait_for(lambda: written(rest_port) == before + 60)
    kept = files(prefix)
    assert len(kept) == MAX_FILES  # the oldest were deleted
    assert all(0 < p.stat().st_size <= MAX_FILE_BYTES for p in kept)


def test_a_full_queue_drops_and_counts_never_blocks(tmp_path: Path) -> None:
    counted: list[bool] = []
    logs = RequestLogs(RequestLogOptions(queue_size=1), lambda model, ok: counted.append(ok))
    logs.set_configs([ModelConfig("m", tmp_path, request_log=RequestLogConfig(
        tmp_path / "m", 1.0))])
    big = {"y": np.zeros(1_000_000, np.float32)}  # slow to encode: the writer falls behind
    for _ in range(50):
        logger = logs.predict_logger("m", None, None, ())
        assert logger is not None
        logger({"x": np.ones(1, np.float32)}, 1, "serving_default", big)
    logs.close()
    assert len(counted) == 50 and counted.count(False) > 0
    assert len(records(tmp_path / "m")) == counted.count(True)


def test_a_file_holds_at_most_a_warmup_files_records(tmp_path: Path) -> None:
    logs = RequestLogs(RequestLogOptions(queue_size=2000))
    logs.set_configs([ModelConfig("m", tmp_path, request_log=RequestLogConfig(
        tmp_path / "m", 1.0))])
    for _ in range(1001):
        logger = logs.predict_logger("m", None, None, ())
        assert logger is not None
        logger({"x": np.ones(1, np.float32)}, 1, "serving_default", {"y": np.ones(1)})
    logs.close()
    assert [len(list(read_prediction_logs(p))) for p in files(tmp_path / "m")] == [1000, 1]


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "1m") -> Iterator[Path]:
    """A real filesystem of ``size`` at ``path`` (a tmpfs: mounting needs root), unmounted
    after; the test is skipped, with the reason, where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def log_predicts(logs: RequestLogs, count: int, values: int = 1) -> None:
    for _ in range(count):
        logger = logs.predict_logger("m", None, None, ())
        assert logger is not None
        logger({"x": np.ones(values, np.float32)}, 1, "serving_default",
               {"y": np.ones(values, np.float32)})


def counting(logs_options: RequestLogOptions) -> tuple[RequestLogs, list[bool]]:
    counted: list[bool] = []
    return RequestLogs(logs_options, lambda model, ok: counted.append(ok)), counted


def test_a_full_disk_drops_records_until_space_returns(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "onnx_serving.server.request_log")
    with small_filesystem(tmp_path / "small") as small:
        logs, counted = counting(RequestLogOptions(retry_seconds=0.05, queue_size=10_000))
        logs.set_configs([ModelConfig("m", tmp_path, request_log=RequestLogConfig(
            small / "m", 1.0))])
        log_predicts(logs, 60, values=10_000)  # 80 KB a record: the 1 MiB disk fills
        wait_for(lambda: len(counted) == 60)
        assert 0 < counted.count(True) < 60
        # What was written is whole: a reader gets every record counted as written.
        assert len(records(small / "m")) == counted.count(True)
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()

        for path in files(small / "m"):  # space returns
            path.unlink()
        time.sleep(0.1)  # past retry_seconds
        log_predicts(logs, 3, values=10_000)
        wait_for(lambda: len(counted) == 63)
        assert counted[-3:] == [True] * 3
        assert len(records(small / "m")) == 3
        assert "writing again" in caplog.text
        logs.close()


def test_a_read_only_directory_logs_one_error_with_a_count(tmp_path: Path, caplog) -> None:
    with small_filesystem(tmp_path / "ro") as directory:
        remount(directory, "ro")
        logs, counted = counting(RequestLogOptions(retry_seconds=0.01))
        logs.set_configs([ModelConfig("m", tmp_path, request_log=RequestLogConfig(
            directory / "sub" / "m", 1.0))])
        for _ in range(20):
            log_predicts(logs, 10)
            time.sleep(0.01)  # several retries, each refused
        wait_for(lambda: len(counted) == 200)
        assert not any(counted)
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1, errors
        assert "Read-only file system" in errors[0] and "records dropped" in errors[0]

        remount(directory, "rw")
        time.sleep(0.05)
        log_predicts(logs, 1)
        wait_for(lambda: len(counted) == 201)
        assert counted[-1] and len(records(directory / "sub" / "m")) == 1
        logs.close()


def test_the_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    logs, counted = counting(RequestLogOptions(queue_size=1000, queue_bytes=1 << 20))
    logs.set_configs([ModelConfig("m", tmp_path, request_log=RequestLogConfig(
        tmp_path / "m", 1.0))])
    log_predicts(logs, 1, values=1 << 20)  # 8 MiB with its output: over the bound alone
    log_predicts(logs, 1)
    logs.close()
    assert counted == [False, True]


def test_close_is_bounded_whatever_is_queued(tmp_path: Path) -> None:
    logs, counted = counting(RequestLogOptions(queue_size=10_000, queue_bytes=1 << 30,
                                               close_seconds=0.0))
    logs.set_configs([ModelConfig("m", tmp_path, request_log=RequestLogConfig(
        tmp_path / "m", 1.0))])
    log_predicts(logs, 200, values=100_000)
    logs.close()  # returns at once: what is left is dropped and counted
    assert len(counted) == 200 and counted.count(False) > 0
