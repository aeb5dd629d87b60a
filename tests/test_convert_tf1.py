"""TF1 exports converted by ``onnx-serving convert`` and served: TF Serving's half_plus_two
(tf.Example signatures, Predict over an intermediate tensor), Estimator-style classifier
and regressor, the mnist tutorial's export, and a TF2 function that parses tf.Example,
asked as TF Serving's own tests and clients ask them, answers compared with TensorFlow
run as TF Serving runs it."""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from onnx_serving.client import Client
from onnx_serving.migration.saved_model import TensorFlowRunner
from tests import saved_models
from tests.saved_models import HALF_PLUS_TWO_VERSION, convert
from tests.server_process import ServerProcess, free_port

ZOO = {
    "classifier": saved_models.estimator_classifier,
    "regressor": saved_models.estimator_regressor,
    "mnist": saved_models.mnist_tutorial,
    "tf2_regressor": saved_models.tf2_parsing_regressor,
}


def example(**features: list) -> bytes:
    feature = {
        k: tf.train.Feature(int64_list=tf.train.Int64List(value=v)) if k == "ids"
        else tf.train.Feature(float_list=tf.train.FloatList(value=v))
        for k, v in features.items()
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Estimator-style and mnist exports, converted together from a TF Serving config."""
    root = tmp_path_factory.mktemp("zoo")
    for name, build in ZOO.items():
        build(root / "saved" / name / "1")
    config = root / "tf_serving.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{root / "saved" / n}" model_platform: "tensorflow" }}'
        for n in ZOO) + " }")
    result = convert(f"--model_config_file={config}", f"--output_dir={root / 'onnx'}")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def served(converted_half_plus_two: Path, zoo: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[prediction_service_pb2_grpc.PredictionServiceStub, str]
]:
    bases = {"half_plus_two": converted_half_plus_two, **{n: zoo / "onnx" / n for n in ZOO}}
    config = zoo / "onnx" / "all.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{base}" model_platform: "onnx" }}'
        for n, base in bases.items()) + " }")
    rest = free_port()
    server = ServerProcess([f"--model_config_file={config}", f"--rest_api_port={rest}"],
                           tmp_path_factory.mktemp("tf1_logs") / "server.log").start()
    with grpc.insecure_channel(server.address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel), f"127.0.0.1:{rest}"
    server.stop()


@pytest.fixture(scope="module")
def tensorflow(converted_half_plus_two: Path) -> TensorFlowRunner:
    saved = converted_half_plus_two.parent.parent / "saved" / "half_plus_two"
    return TensorFlowRunner(saved / str(HALF_PLUS_TWO_VERSION))


def predict(stub, signature: str, alias: str, value: np.ndarray,
            model: str = "half_plus_two") -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    response = stub.Predict(request, 30)
    if model == "half_plus_two":
        assert response.model_spec.version.value == HALF_PLUS_TWO_VERSION
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for alias, value in expected.items():
        assert got[alias].shape == value.shape, alias
        if value.dtype == object:
            assert got[alias].tolist() == value.tolist(), alias
        else:
            np.testing.assert_allclose(got[alias], value, rtol=1e-5, atol=1e-6, err_msg=alias)


@pytest.mark.parametrize("x", [[2.0], [1.0, 2.0, 5.0], [[1.0], [3.0]], [[1.0, 2.0], [3.0, 4.0]]],
                         ids=["[1]", "[3]", "[2,1]", "[2,2]"])
def test_predict_takes_every_shape_tf_serving_takes(served, tensorflow, x) -> None:
    """serving_default's x is the parsed tensor, declared [-1, 1]; TF Serving feeds it
    whatever comes (its own test sends [1], its tutorial [3])."""
    value = np.array(x, np.float32)
    got = predict(served[0], "serving_default", "x", value)
    expected = tensorflow.run("serving_default", {"x": value})
    assert got["y"].shape == expected["y"].shape == value.shape
    np.testing.assert_array_equal(got["y"], expected["y"])


def test_predict_over_serialized_examples(served, tensorflow) -> None:
    examples = np.array([example(x=[1.0]), example(x=[4.0], x2=[6.0])], dtype=object)
    for signature, output in (("regress_x_to_y", "outputs"), ("regress_x_to_y2", "outputs"),
                              ("classify_x_to_y", "scores")):
        got = predict(served[0], signature, "inputs", examples)
        expected = tensorflow.run(signature, {"inputs": examples})
        np.testing.assert_array_equal(got[output], expected[output])
    np.testing.assert_array_equal(
        predict(served[0], "regress_x2_to_y3", "inputs", np.array([[6.0]], np.float32))["outputs"],
        [[6.0]],
    )


@pytest.mark.parametrize(("examples", "message"), [
    ([example(x2=[1.0])], "Name: <unknown>, Feature: x (data type: float) is required but "
                          "could not be found."),
    ([example(x=[1.0, 2.0])], "Number of float values != expected.  Values size: 2 but "
                              "output shape: [1]"),
    ([b"not an example"], "Could not parse example input"),
])
def test_bad_examples_get_tensorflows_error(served, tensorflow, examples, message) -> None:
    array = np.array(examples, dtype=object)
    with pytest.raises(tf.errors.InvalidArgumentError, match=None) as theirs:
        tensorflow.run("regress_x_to_y", {"inputs": array})
    assert message in theirs.value.message
    with pytest.raises(grpc.RpcError) as ours:
        predict(served[0], "regress_x_to_y", "inputs", array)
    assert ours.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in ours.value.details()


def test_rest_predict_as_in_tf_serving_tutorial(served) -> None:
    body = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
    url = f"http://{served[1]}/v1/models/half_plus_two:predict"
    with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as response:
        assert json.loads(response.read()) == {"predictions": [2.5, 3.0, 4.5]}


def test_metadata_shows_the_savedmodels_signatures(served, tensorflow) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    response = served[0].GetModelMetadata(request, 30)
    ours = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(ours)
    theirs = tensorflow.signature_defs
    assert set(ours.signature_def) == set(theirs)
    for name, signature in theirs.items():
        mine = ours.signature_def[name]
        assert mine.method_name == signature.method_name
        for side in ("inputs", "outputs"):
            for alias, info in getattr(signature, side).items():
                assert getattr(mine, side)[alias].dtype == info.dtype
                assert getattr(mine, side)[alias].tensor_shape == info.tensor_shape


def test_serving_a_savedmodel_unconverted_says_how_to_convert(
    converted_half_plus_two: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server without TensorFlow (here: one that cannot import it) cannot convert at
    load: it says what to install, or how to convert ahead of time."""
    saved = converted_half_plus_two.parent.parent / "saved" / "half_plus_two"
    without = tmp_path / "without_tensorflow" / "tensorflow"
    without.mkdir(parents=True)
    (without / "__init__.py").write_text("raise ImportError('No module named tensorflow')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(without.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    ))
    server = ServerProcess([
        f"--saved_model_cache_dir={tmp_path / 'cache'}",
        "--model_name=half_plus_two", f"--model_base_path={saved}", "--max_num_load_retries=0",
    ], tmp_path / "server.log").start()
    try:
        with Client(server.address) as client:
            [status] = client.status("half_plus_two")
    finally:
        server.stop()
    assert status.state == "END" and status.error_code != grpc.StatusCode.OK
    assert "holds a TensorFlow SavedModel" in status.error_message
    assert "tensorflow: No module named tensorflow" in status.error_message
    assert "pip install 'onnx-serving[migration]'" in status.error_message
    assert f"`onnx-serving convert {saved} {saved}_onnx`" in status.error_message


ESTIMATOR_EXAMPLES = np.array([
    example(age=[30.0], hours=[38.0], ids=[1, 2]),
    example(age=[52.0]),  # hours from its default, no ids
    example(age=[19.0], ids=[4, 4, 4, 1]),
], dtype=object)


@pytest.mark.parametrize(("model", "signature", "alias"), [
    ("classifier", "serving_default", "inputs"), ("classifier", "classification", "inputs"),
    ("classifier", "predict", "examples"), ("regressor", "serving_default", "inputs"),
    ("regressor", "predict", "examples"), ("tf2_regressor", "serving_default", "examples"),
])
def test_estimator_exports_answer_as_tensorflow(served, zoo, model, signature, alias) -> None:
    """Fixed-length features with and without defaults, and a var-length one, parsed
    by the server from the same serialized Examples TensorFlow gets."""
    got = predict(served[0], signature, alias, ESTIMATOR_EXAMPLES, model)
    expected = TensorFlowRunner(zoo / "saved" / model / "1").run(
        signature, {alias: ESTIMATOR_EXAMPLES}
    )
    assert_same(got, expected)


def test_estimator_rest_predict_with_b64_examples(served, zoo) -> None:
    """REST callers send serialized Examples as {"b64": ...}; the bytes reach the parse."""
    instances = [{"b64": base64.b64encode(e).decode()} for e in ESTIMATOR_EXAMPLES]
    body = json.dumps({"signature_name": "predict", "instances": instances}).encode()
    url = f"http://{served[1]}/v1/models/regressor:predict"
    with urllib.request.urlopen(urllib.request.Request(url, body), timeout=30) as response:
        predictions = json.loads(response.read())["predictions"]
    expected = TensorFlowRunner(zoo / "saved" / "regressor" / "1").run(
        "predict", {"examples": ESTIMATOR_EXAMPLES}
    )["predictions"]
    np.testing.assert_allclose(predictions, expected, rtol=1e-5)


def test_mnist_tutorial_export_serves_both_signatures(served, zoo) -> None:
    """mnist_saved_model.py's signatures: predict_images over the parsed images, and the
    classify serving_default whose classes come from a lookup table."""
    images = np.random.default_rng(3).random((2, 784), dtype=np.float32)
    tensorflow = TensorFlowRunner(zoo / "saved" / "mnist" / "1")
    assert_same(predict(served[0], "predict_images", "images", images, "mnist"),
                tensorflow.run("predict_images", {"images": images}))
    examples = np.array([example(x=row.tolist()) for row in images], dtype=object)
    got = predict(served[0], "serving_default", "inputs", examples, "mnist")
    assert_same(got, tensorflow.run("serving_default", {"inputs": examples}))
    assert sorted(got["classes"][0].tolist()) == [str(i).encode() for i in range(10)]
