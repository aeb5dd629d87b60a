"""Warmup replay, with files written by TensorFlow's own TFRecordWriter and PredictionLog."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)

from onnx_serving.client import Client
from onnx_serving.codec.served_model import WARMUP_FILE
from onnx_serving.codec.tfrecord import TFRecordError, read_records, write_records
from tests.models import EXAMPLES, add_constant, classifier, classifier_signatures
from tests.server_process import ServerProcess, free_port


def predict_log(x: list[float], input_name: str = "x") -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ignored by warmup"
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(np.array([x], np.float32).T))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    ).SerializeToString()


def example_logs(signature: str) -> list[bytes]:
    """A Classify, a Regress and a MultiInference record over one example, x = 2."""
    examples = example_input()
    classify = classification_pb2.ClassificationRequest(input=examples)
    classify.model_spec.signature_name = signature
    regress = regression_pb2.RegressionRequest(input=examples)
    regress.model_spec.signature_name = "regress_x_to_y"
    multi = inference_pb2.MultiInferenceRequest(input=examples)
    for name, method in ((signature, "classify"), ("regress_x_to_y2", "regress")):
        task = multi.tasks.add(method_name=f"tensorflow/serving/{method}")
        task.model_spec.name = "ignored by warmup"
        task.model_spec.signature_name = name
    return [
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)).SerializeToString(),
        prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=regress)).SerializeToString(),
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)
        ).SerializeToString(),
    ]


def example_input() -> Any:
    example = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0]))
    }))
    request = classification_pb2.ClassificationRequest()
    request.input.example_list.examples.add().CopyFrom(example)
    return request.input


def version_with_warmup(base: Path, records: list[bytes] | None, copy: Path | None = None) -> None:
    """Version 1 of add_constant(1), or of the model directory ``copy``."""
    version = base / "1"
    if copy is None:
        version.mkdir(parents=True)
        (version / "model.onnx").write_bytes(add_constant(1).SerializeToString())
    else:
        shutil.copytree(copy, version)
    if records is not None:
        (version / "assets.extra").mkdir()
        path = version / "assets.extra" / "tf_serving_warmup_requests"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for record in records:
                writer.write(record)


def test_tfrecord_reader_matches_tensorflows_writer(tmp_path: Path) -> None:
    records = [b"", b"abc", bytes(range(256)) * 400]
    with tf.io.TFRecordWriter(str(tmp_path / "tf")) as writer:
        for record in records:
            writer.write(record)
    assert list(read_records(tmp_path / "tf")) == records
    write_records(tmp_path / "ours", records)
    assert (tmp_path / "ours").read_bytes() == (tmp_path / "tf").read_bytes()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-1], "cut short"),
        (lambda b: b[:5], "cut short in its header"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "fails its checksum"),
        (lambda b: struct.pack("<Q", 99) + b[8:], "corrupt length"),
    ],
)
def test_tfrecord_reader_refuses_damaged_files(tmp_path: Path, damage, message: str) -> None:
    write_records(tmp_path / "r", [b"x" * 32])
    (tmp_path / "r").write_bytes(damage((tmp_path / "r").read_bytes()))
    with pytest.raises(TFRecordError, match=message):
        list(read_records(tmp_path / "r"))


def test_warmup_replays_before_a_version_is_available(tmp_path: Path) -> None:
    version_with_warmup(tmp_path / "good", [predict_log([1.0]), predict_log([2.0, 3.0])])
    version_with_warmup(tmp_path / "bad", [predict_log([1.0]), predict_log([1.0], "nope")])
    version_with_warmup(tmp_path / "many", [predict_log([1.0])] * 1001)
    version_with_warmup(tmp_path / "synthetic", None)
    half_plus_two = EXAMPLES / "models" / "half_plus_two" / "123"
    version_with_warmup(tmp_path / "examples", example_logs("classify_x_to_y"), half_plus_two)
    # With --enable_signature_method_name_check a Predict signature cannot classify.
    predict_method = tmp_path / "predict_method_model"
    predict_method.mkdir()
    (predict_method / "model.onnx").write_bytes(classifier().SerializeToString())
    (predict_method / "signatures.json").write_text(
        json.dumps({"signature_def": classifier_signatures()})
    )
    version_with_warmup(tmp_path / "method", example_logs("predict_method")[:1], predict_method)
    config = tmp_path / "models.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{name}" base_path: "{tmp_path / name}" }}'
        for name in ("good", "bad", "many", "synthetic", "examples", "method")
    ) + " }")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    server = ServerProcess(
        [f"--model_config_file={config}", "--num_request_iterations_for_warmup=2",
         "--max_num_load_retries=0", "--enable_synthetic_warmup",
         "--enable_signature_method_name_check", f"--rest_api_port={rest_port}",
         f"--monitoring_config_file={monitoring}"],
        tmp_path / "server.log",
    ).start()
    try:
        with Client(server.address) as client:
            assert client.predict("good", {"x": np.array([[1.0]], np.float32)})["y"][0, 0] == 2.0
            [bad] = client.status("bad")
            assert bad.state == "END"
            assert "warmup record 1 of" in bad.error_message
            assert "Signature input alias: x(feed name: x) not found" in bad.error_message
            [many] = client.status("many")
            assert "Number of warmup records exceeds the maximum (1000)" in many.error_message
            assert client.status("synthetic")[0].state == "AVAILABLE"
            assert client.status("examples")[0].state == "AVAILABLE"
            [method] = client.status("method")
            assert method.state == "END"
            assert "warmup record 0 of" in method.error_message
            assert ("Expected classification signature method_name to be "
                    "tensorflow/serving/classify. Was: tensorflow/serving/predict"
                    in method.error_message)
        logs = server.logs()
        warmed = logs.index("Number of warmup records read: 2.")
        assert "Number of warmup records read: 3." in logs
        assert warmed < logs.index("Successfully loaded servable version {name: good")
        assert "Synthetic warmup of signature serving_default" in logs
        # Timed as TF Serving times it: labelled by its Status::ToString().
        metrics = requests.get(
            f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics", timeout=30).text
        warmups = {
            name: [status for status in re.findall(
                r':tensorflow:serving:model_warmup_latency_count\{model_path="[^"]*/'
                + name + r'/1",status="((?:[^"\\]|\\.)*)"\}', metrics)]
            for name in ("good", "bad", "many", "synthetic", "examples", "method")
        }
        assert warmups["good"] == warmups["synthetic"] == warmups["examples"] == ["OK"]
        assert warmups["bad"][0].startswith("INVALID_ARGUMENT: ")
        assert "warmup record 1 of" in warmups["bad"][0]
        assert warmups["many"] == ["INVALID_ARGUMENT: Number of warmup records exceeds the "
                                   f"maximum (1000) at {tmp_path / 'many' / '1' / WARMUP_FILE}"]
        assert warmups["method"][0].startswith("INVALID_ARGUMENT: ")
    finally:
        server.stop()
