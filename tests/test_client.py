"""The light client against the real server: the API tests' checks, in short."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import grpc
import ml_dtypes
import numpy as np
import pytest

from onnx_serving.client import Client, ServingError, VersionStatus, make_tensor_proto
from onnx_serving.protos.tensorflow.core.framework import types_pb2
from tests.models import DTYPES
from tests.server_process import ServerProcess

X = np.array([[2.0]], np.float32)
FLOATS = np.arange(6, dtype=np.float32).reshape(2, 3)
INTS = np.array([5, -7], np.int64)


@pytest.fixture(scope="module")
def client(channel: grpc.Channel) -> Iterator[Client]:
    with Client(channel) as client:
        yield client


def test_needs_no_tensorflow() -> None:
    code = "import sys, onnx_serving.client; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_predict(client: Client) -> None:
    outputs = client.predict("half_plus_two", {"x": X})
    assert list(outputs) == ["y"]
    np.testing.assert_array_equal(outputs["y"], np.array([[3.0]], np.float32))
    assert outputs["y"].dtype == np.float32
    response = client.predict_response("half_plus_two", {"x": make_tensor_proto(X)})
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs["y"].float_val) == [3.0]


def test_tensorflow_tensor_proto_is_accepted(client: Client) -> None:
    import tensorflow as tf

    outputs = client.predict("half_plus_two", {"x": tf.make_tensor_proto(X)})
    np.testing.assert_array_equal(outputs["y"], [[3.0]])


def test_own_channel_takes_large_messages(server: ServerProcess) -> None:
    x = np.arange(2_000_000, dtype=np.float32).reshape(-1, 1)  # 8 MB, twice gRPC's default
    with Client(server.address) as client:
        np.testing.assert_array_equal(client.predict("half_plus_two", {"x": x})["y"], x / 2 + 2)


@pytest.mark.parametrize(
    ("choice", "served"), [({}, 3), ({"version": 1}, 1), ({"label": "canary"}, 2)]
)
def test_version_and_label(client: Client, choice: dict, served: int) -> None:
    response = client.predict_response("versions", {"x": X}, **choice)
    assert response.model_spec.version.value == served
    np.testing.assert_array_equal(client.predict("versions", {"x": X}, **choice)["y"], X + served)


def test_version_and_label_together_is_refused(client: Client) -> None:
    with pytest.raises(ValueError):
        client.predict("versions", {"x": X}, version=1, label="stable")


def test_signature_and_output_filter(client: Client) -> None:
    inputs = {"floats": FLOATS, "ints": INTS}
    outputs = client.predict("multi", inputs)
    assert sorted(outputs) == ["doubled", "plus_one"]
    np.testing.assert_array_equal(outputs["plus_one"], FLOATS + 1)
    assert outputs["doubled"].dtype == np.int64
    np.testing.assert_array_equal(outputs["doubled"], INTS * 2)
    assert list(client.predict("multi", inputs, output_filter=["doubled"])) == ["doubled"]
    response = client.predict_response("multi", inputs, signature="doubler")
    assert (response.model_spec.version.value, response.model_spec.signature_name) == (7, "doubler")
    assert list(response.outputs) == ["doubled"]


def test_metadata(client: Client) -> None:
    signatures = client.metadata("multi")
    assert sorted(signatures) == ["doubler", "serving_default"]
    inputs = signatures["serving_default"].inputs
    assert (inputs["floats"].name, inputs["floats"].dtype) == ("a", types_pb2.DT_FLOAT)
    assert [d.size for d in inputs["floats"].tensor_shape.dim] == [-1, 3]
    assert (inputs["ints"].name, inputs["ints"].dtype) == ("b", types_pb2.DT_INT64)
    assert [d.size for d in inputs["ints"].tensor_shape.dim] == [-1]
    assert sorted(signatures["doubler"].outputs) == ["doubled"]
    stable = client.metadata("versions", label="stable")["serving_default"]
    assert stable.outputs["y"].dtype == types_pb2.DT_FLOAT

    dtypes = client.metadata("dtypes")
    for _, tf_name, np_name in DTYPES:
        info = dtypes[np_name].inputs["input"]
        assert info.dtype == types_pb2.DataType.Value(tf_name), np_name


def test_status(client: Client) -> None:
    ok = grpc.StatusCode.OK
    assert client.status("versions") == [VersionStatus(v, "AVAILABLE", ok, "") for v in (3, 2, 1)]
    assert client.status("versions", version=2) == [VersionStatus(2, "AVAILABLE", ok, "")]
    [broken] = client.status("broken")
    assert (broken.version, broken.state) == (1, "END")
    assert broken.error_code != ok
    assert "model.onnx" in broken.error_message


@pytest.mark.parametrize(
    ("model", "inputs", "options", "code", "message"),
    [
        ("nope", {"x": X}, {}, "NOT_FOUND", "Servable not found for request: Latest(nope)"),
        ("broken", {"x": X}, {}, "NOT_FOUND", "Servable not found for request: Latest(broken)"),
        (
            "versions",
            {"x": X},
            {"version": 5},
            "NOT_FOUND",
            "Servable not found for request: Specific(versions, 5)",
        ),
        (
            "versions",
            {"x": X},
            {"label": "x"},
            "INVALID_ARGUMENT",
            "Unrecognized servable version label: x",
        ),
        (
            "half_plus_two",
            {},
            {},
            "INVALID_ARGUMENT",
            "input size does not match signature: 0!=1 len({}) != len({x}). "
            "Sent extra: {}. Missing but required: {x}.",
        ),
        (
            "half_plus_two",
            {"x": X},
            {"output_filter": ["q"]},
            "INVALID_ARGUMENT",
            "output tensor alias not found in signature: q Outputs expected to be in the set {y}.",
        ),
        (
            "half_plus_two",
            {"x": X},
            {"signature": "nosig"},
            "FAILED_PRECONDITION",
            'Serving signature key "nosig" not found.',
        ),
    ],
)
def test_predict_errors(
    client: Client, model: str, inputs: dict, options: dict, code: str, message: str
) -> None:
    with pytest.raises(ServingError) as caught:
        client.predict(model, inputs, **options)
    assert (caught.value.code, caught.value.message) == (grpc.StatusCode[code], message)
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_status_and_metadata_errors(client: Client) -> None:
    with pytest.raises(ServingError) as caught:
        client.status("nope")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingError) as caught:
        client.metadata("nope")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_deadline(client: Client) -> None:
    # 16 MB cannot cross even loopback within a millisecond.
    x = np.zeros((4_000_000, 1), np.float32)
    with pytest.raises(ServingError) as caught:
        client.predict("half_plus_two", {"x": x}, timeout=1e-3)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_strings(client: Client) -> None:
    # Valid UTF-8 only: ONNX Runtime holds strings as text.
    values = np.array([[b"", b"a\x00b"], ["é ✓ 🙂".encode(), b"x" * 1000]], dtype=object)
    output = client.predict("dtypes", {"input": values}, signature="object")["output"]
    assert output.dtype == object and output.shape == (2, 2)
    assert output.tolist() == values.tolist()


def test_every_dtype_round_trips(client: Client) -> None:
    for _, _, np_name in DTYPES:
        if np_name == "object":
            continue
        dtype = np.dtype(getattr(ml_dtypes, np_name, np_name))
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            values = np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
        elif dtype.kind == "b":
            values = np.array([True, False, True, True, False])
        else:
            values = np.array([-1.5, 0.0, 2.0, np.inf, np.nan]).astype(dtype)
        for tensor_content in (False, True):
            tensor = make_tensor_proto(values.reshape(5, 1), tensor_content=tensor_content)
            output = client.predict("dtypes", {"input": tensor}, signature=np_name)["output"]
            assert output.dtype == dtype, np_name
            assert output.shape == (5, 1), np_name
            assert output.tobytes() == values.tobytes(), np_name
