"""Exports that decode JPEGs or work on text: converted with the real ``onnx-serving convert``,
served, and asked exactly as TF Serving's ResNet clients ask (gRPC with the JPEG bytes in a
DT_STRING tensor, REST with ``{"b64": ...}``), answers compared with TensorFlow's."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from onnx_serving.codec.dtypes import oip_numpy
from onnx_serving.codec.oip import from_raw
from onnx_serving.protos.inference import open_inference_grpc_pb2_grpc as oip_grpc
from tests import tf_op_models
from tests.server_process import ServerProcess, free_port
from tests.test_oip import binary_infer, raw_infer, read_binary_answer

MODELS = {"resnet": tf_op_models.jpeg_classifier, "text": tf_op_models.text}


def convert(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "onnx_serving.server", "convert", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Both models converted in one run of the CLI, from a TF Serving model config."""
    root = tmp_path_factory.mktemp("tf_ops")
    for name, build in MODELS.items():
        build(root / "saved" / name / "1")
    config = root / "saved.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{root / "saved" / n}" }}' for n in MODELS
    ) + " }")
    result = convert(f"--model_config_file={config}", f"--output_dir={root / 'onnx'}",
                     "--allow_partial")
    assert "| resnet | 1 | converted |" in result.stdout, result.stderr[-3000:]
    return root, result.stdout


@pytest.fixture(scope="module")
def server(converted: tuple[Path, str]) -> Iterator[tuple[grpc.Channel, str]]:
    root, _ = converted
    port = free_port()
    process = ServerProcess(
        [f"--model_config_file={root / 'onnx' / 'models.config'}", f"--rest_api_port={port}"],
        root / "server.log",
    ).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # gRPC answers first; REST opens right after it
        try:
            requests.get(f"{base}/v1/models/resnet", timeout=1)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, process.logs()
            time.sleep(0.05)
    with grpc.insecure_channel(process.address) as channel:
        yield channel, base
    process.stop()


def tensorflow_answers(root: Path, model: str, **inputs: object) -> dict[str, np.ndarray]:
    signature = tf.saved_model.load(str(root / "saved" / model / "1")).signatures[
        "serving_default"
    ]
    return {k: v.numpy() for k, v in signature(**{
        k: tf.constant(v) for k, v in inputs.items()
    }).items()}


def test_resnet_grpc_client_gets_tensorflows_top_class(converted, server) -> None:
    """resnet_client_grpc.py: the file's bytes in ``image_bytes``, shape [1]."""
    channel, _ = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for data in tf_op_models.jpegs(4, seed=1):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "resnet"
        request.model_spec.signature_name = "serving_default"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(data, shape=[1]))
        result = stub.Predict(request, 30)
        expected = tensorflow_answers(converted[0], "resnet", image_bytes=[data])
        assert list(result.outputs["classes"].int64_val) == expected["classes"].tolist()
        # TensorFlow decodes with libjpeg's fast integer DCT, the server with the accurate
        # one: pixels differ by a few levels (docs/migration.md has the measurement).
        np.testing.assert_allclose(tf.make_ndarray(result.outputs["probabilities"]),
                                   expected["probabilities"], atol=5e-3)


def test_resnet_rest_client_with_b64_gets_tensorflows_top_class(converted, server) -> None:
    """resnet_client.py with MODEL_ACCEPT_JPG: ``{"instances": [{"b64": ...}]}``."""
    _, base = server
    for data in tf_op_models.jpegs(2, seed=2):
        jpeg_bytes = base64.b64encode(data).decode("utf-8")
        predict_request = '{"instances" : [{"b64": "' + jpeg_bytes + '"}]}'
        response = requests.post(f"{base}/v1/models/resnet:predict", data=predict_request,
                                 timeout=30)
        response.raise_for_status()
        prediction = response.json()["predictions"][0]
        expected = tensorflow_answers(converted[0], "resnet", image_bytes=[data])
        assert prediction["classes"] == expected["classes"][0]
        assert np.argmax(prediction["probabilities"]) == expected["classes"][0]


def test_a_batch_of_pngs_of_different_sizes_is_exact(converted, server) -> None:
    """PNG is lossless (decode_jpeg takes it too): only the conversion can differ."""
    channel, _ = server
    images = tf_op_models.jpegs(3, seed=3, fmt="PNG")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images))
    result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    expected = tensorflow_answers(converted[0], "resnet", image_bytes=images)
    np.testing.assert_allclose(tf.make_ndarray(result.outputs["probabilities"]),
                               expected["probabilities"], atol=1e-5)


def test_jpeg_bytes_over_the_open_inference_protocol_answer_as_predict(server) -> None:
    """tritonclient's way with an image model: the files' bytes as a BYTES input, over OIP
    gRPC (raw contents) and REST (binary data extension); the answer is Predict's."""
    channel, base = server
    images = tf_op_models.jpegs(2, seed=4)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images))
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    expected = {name: tf.make_ndarray(tensor) for name, tensor in predict.outputs.items()}
    array = np.array(images, dtype=object)
    v2 = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        raw_infer("resnet", array, "BYTES", name="image_bytes"), 30)
    by_grpc = {o.name: from_raw(raw, oip_numpy(o.datatype), o.shape)
               for o, raw in zip(v2.outputs, v2.raw_output_contents, strict=True)}
    body, headers = binary_infer([("image_bytes", "BYTES", array)], binary_output=True)
    response = requests.post(f"{base}/v2/models/resnet/infer", data=body, headers=headers,
                             timeout=30)
    assert response.status_code == 200, response.text
    document, blobs = read_binary_answer(dict(response.headers), response.content)
    by_rest = {o["name"]: from_raw(blobs[o["name"]], oip_numpy(o["datatype"]), o["shape"])
               for o in document["outputs"]}
    for answer in (by_grpc, by_rest):
        assert answer.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(answer[name], value)


def test_bytes_that_are_no_image_get_tensorflows_error(server) -> None:
    channel, _ = server
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"\xff\xfe not an image"]))
    with pytest.raises(grpc.RpcError) as caught:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Unknown image file format. One of JPEG" in caught.value.details()


def test_string_ops_answer_as_tensorflow(converted, server) -> None:
    """join, strip, regex_replace, split, and TensorFlow's ASCII-only upper/lower
    (whatever the server's locale): non-ASCII letters stay as they are."""
    channel, _ = server
    text = [" Straße 42 ÉTÉ ", "Hello 7 World", "ıİ x9"]
    tag = ["été", "ok", "MiXed"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "text"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(text))
    request.inputs["tag"].CopyFrom(tf.make_tensor_proto(tag))
    result = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    expected = tensorflow_answers(converted[0], "text", text=text, tag=tag)
    for alias, value in expected.items():
        assert tf.make_ndarray(result.outputs[alias]).tolist() == value.tolist(), alias


def test_unconvertible_string_op_is_named_with_its_signature(converted) -> None:
    root, summary = converted
    assert "| text | 1 | partial | serving_default |" in summary
    assert "- text/1: signature prefix: " in summary and "Substr" in summary
    entries = json.loads((root / "onnx" / "text" / "1" / "signatures.json").read_text())
    assert set(entries["signature_def"]) == {"serving_default"}
