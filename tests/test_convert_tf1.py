"""TF1 exports converted by ``onnx-serving convert`` and served: TF Serving's half_plus_two
(tf.Example signatures, Predict over an intermediate tensor), asked as TF Serving's own
tests ask it, answers compared with TensorFlow run as TF Serving runs it."""

from __future__ import annotations

import json
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

from onnx_serving.migration.saved_model import TensorFlowRunner
from tests.saved_models import HALF_PLUS_TWO_VERSION
from tests.server_process import ServerProcess, free_port


def example(**features: list[float]) -> bytes:
    feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=v))
               for k, v in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def served(converted_half_plus_two: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[prediction_service_pb2_grpc.PredictionServiceStub, str]
]:
    logs = tmp_path_factory.mktemp("tf1_logs")
    rest = free_port()
    server = ServerProcess([
        "--model_name=half_plus_two", f"--model_base_path={converted_half_plus_two}",
        f"--rest_api_port={rest}",
    ], logs / "server.log").start()
    with grpc.insecure_channel(server.address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel), f"127.0.0.1:{rest}"
    server.stop()


@pytest.fixture(scope="module")
def tensorflow(converted_half_plus_two: Path) -> TensorFlowRunner:
    saved = converted_half_plus_two.parent.parent / "saved" / "half_plus_two"
    return TensorFlowRunner(saved / str(HALF_PLUS_TWO_VERSION))


def predict(stub, signature: str, alias: str, value: np.ndarray) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = signature
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    response = stub.Predict(request, 30)
    assert response.model_spec.version.value == HALF_PLUS_TWO_VERSION
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


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
