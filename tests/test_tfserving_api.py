"""TF Serving's gRPC API, end to end, through the real tensorflow-serving-api client.

Everything here talks to the server process (``server``/``channel`` fixtures)
with the stubs and messages a TF Serving user has: ``tensorflow_serving.apis``
and ``tf.make_tensor_proto`` / ``tf.make_ndarray``. Expected codes and
messages are TF Serving's own (model_servers/server_core.cc,
servables/tensorflow/predict_util.cc, TF's cc/saved_model/util.cc,
get_model_status_impl.cc, get_model_metadata_impl.cc).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import message as protobuf_message
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.concurrency import run_concurrently
from tests.models import DTYPES

Code = grpc.StatusCode
TIMEOUT = 30
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


# ---------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def spec(
    message: Any,
    name: str | None,
    *,
    version: int | None = None,
    label: str | None = None,
    signature: str | None = None,
) -> Any:
    """Fills ``message.model_spec``; ``name=None`` leaves the spec unset."""
    if name is None:
        return message
    message.model_spec.name = name
    if version is not None:
        message.model_spec.version.value = version
    if label is not None:
        message.model_spec.version_label = label
    if signature is not None:
        message.model_spec.signature_name = signature
    return message


def predict_request(
    name: str | None,
    inputs: dict[str, tensor_pb2.TensorProto] | None = None,
    *,
    output_filter: Sequence[str] = (),
    **model_spec: Any,
) -> predict_pb2.PredictRequest:
    request = spec(predict_pb2.PredictRequest(), name, **model_spec)
    for alias, proto in (inputs or {}).items():
        request.inputs[alias].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return request


def metadata_request(
    name: str | None, fields: Sequence[str] = ("signature_def",), **model_spec: Any
) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = spec(get_model_metadata_pb2.GetModelMetadataRequest(), name, **model_spec)
    request.metadata_field.extend(fields)
    return request


def status_request(
    name: str | None, **model_spec: Any
) -> get_model_status_pb2.GetModelStatusRequest:
    return spec(get_model_status_pb2.GetModelStatusRequest(), name, **model_spec)


def floats(values: Any, shape: Sequence[int] | None = None) -> tensor_pb2.TensorProto:
    """A DT_FLOAT tensor as TF clients make it (tensor_content)."""
    return tf.make_tensor_proto(np.asarray(values, np.float32), shape=shape)


def typed(dtype: int, shape: Sequence[int], **fields: Any) -> tensor_pb2.TensorProto:
    """A TensorProto filled by hand: typed ``*_val`` fields or raw ``tensor_content``."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def shape_of(proto: tensor_pb2.TensorProto) -> list[int]:
    return [d.size for d in proto.tensor_shape.dim]


def rpc_error(stub: Any, method: str, request: protobuf_message.Message) -> grpc.RpcError:
    """The error ``method`` answers ``request`` with (it must fail)."""
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request, timeout=TIMEOUT)
    return caught.value


# ---------------------------------------------------------------------------
# Predict: values, typed fields, response form


def test_predict_half_plus_two_with_make_tensor_proto(prediction):
    request = predict_request("half_plus_two", {"x": floats([2.0], shape=[1])})
    response = prediction.Predict(request, timeout=TIMEOUT)

    assert list(response.outputs) == ["y"]
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert shape_of(y) == [1]
    # Answered in typed fields, as TF Serving's AsProtoField does: clients read float_val.
    assert list(y.float_val) == [3.0]
    assert y.tensor_content == b""
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version_label == ""


@pytest.mark.parametrize(
    ("shape", "values", "expected"),
    [
        pytest.param([1], [2.0], [3.0], id="one-value"),
        pytest.param([], [2.0], [3.0], id="scalar"),
        pytest.param([3], [1.0], [2.5, 2.5, 2.5], id="short-field-repeats-last"),
        pytest.param([4], [0.0, 2.0], [2.0, 3.0, 3.0, 3.0], id="short-field-repeats-last-of-two"),
        pytest.param([2], [], [2.0, 2.0], id="empty-field-is-zeros"),
        pytest.param([1], [2.0, 9.0], [3.0], id="surplus-values-ignored"),
        pytest.param([2, 2], [0.0, 2.0, 4.0, 6.0], [2.0, 3.0, 4.0, 5.0], id="matrix"),
    ],
)
def test_predict_with_hand_filled_float_val(prediction, shape, values, expected):
    proto = typed(types_pb2.DT_FLOAT, shape, float_val=values)
    response = prediction.Predict(predict_request("half_plus_two", {"x": proto}), timeout=TIMEOUT)
    y = response.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert shape_of(y) == shape
    assert list(y.float_val) == expected
    np.testing.assert_array_equal(tf.make_ndarray(y), np.reshape(expected, shape))


@pytest.mark.parametrize("output_filter", [["y"], []], ids=["filter-y", "no-filter"])
@pytest.mark.parametrize(("model", "expected"), [("half_plus_two", 3.0), ("half_plus_three", 4.0)])
def test_predict_output_filter(prediction, model, expected, output_filter):
    request = predict_request(model, {"x": floats([2.0])}, output_filter=output_filter)
    response = prediction.Predict(request, timeout=TIMEOUT)
    assert list(response.outputs) == ["y"]
    assert list(response.outputs["y"].float_val) == [expected]
    assert response.model_spec.name == model
    assert response.model_spec.version.value == 123


@pytest.mark.parametrize(
    ("model_spec", "served"),
    [
        pytest.param({}, 3, id="latest"),
        pytest.param({"version": 1}, 1, id="version-1"),
        pytest.param({"version": 2}, 2, id="version-2"),
        pytest.param({"version": 3}, 3, id="version-3"),
        pytest.param({"label": "stable"}, 1, id="label-stable"),
        pytest.param({"label": "canary"}, 2, id="label-canary"),
    ],
)
def test_predict_version_choice(prediction, model_spec, served):
    request = predict_request("versions", {"x": floats([[1.0], [10.0]])}, **model_spec)
    response = prediction.Predict(request, timeout=TIMEOUT)
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["y"]), [[1.0 + served], [10.0 + served]]
    )
    assert response.model_spec.name == "versions"
    # The served version comes back as a number, whatever the request named.
    assert response.model_spec.version.value == served
    assert response.model_spec.version_label == ""


def test_predict_two_inputs_two_outputs(prediction):
    inputs = {
        "floats": floats([[1, 2, 3], [4, 5, 6]]),
        "ints": tf.make_tensor_proto(np.array([1, -2], np.int64)),
    }
    response = prediction.Predict(predict_request("multi", inputs), timeout=TIMEOUT)
    assert sorted(response.outputs) == ["doubled", "plus_one"]
    assert response.outputs["plus_one"].dtype == types_pb2.DT_FLOAT
    assert response.outputs["doubled"].dtype == types_pb2.DT_INT64
    np.testing.assert_array_equal(
        tf.make_ndarray(response.outputs["plus_one"]), [[2, 3, 4], [5, 6, 7]]
    )
    assert list(response.outputs["doubled"].int64_val) == [2, -4]
    assert response.model_spec.version.value == 7

    filtered = predict_request("multi", inputs, output_filter=["doubled"])
    assert list(prediction.Predict(filtered, timeout=TIMEOUT).outputs) == ["doubled"]

    doubler = prediction.Predict(predict_request("multi", inputs, signature="doubler"),
                                 timeout=TIMEOUT)
    assert list(doubler.outputs) == ["doubled"]
    assert doubler.model_spec.signature_name == "doubler"


# ---------------------------------------------------------------------------
# GetModelMetadata


def signature_map(response: get_model_metadata_pb2.GetModelMetadataResponse):
    assert list(response.metadata) == ["signature_def"]
    any_message = response.metadata["signature_def"]
    assert any_message.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert any_message.Unpack(unpacked)
    return unpacked.signature_def


def tensor_infos(infos) -> dict[str, tuple[str, str, list[int] | None]]:
    """alias → (graph name, dtype name, dims or None for unknown rank)."""
    described = {}
    for alias, info in infos.items():
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else [d.size for d in shape.dim]
        described[alias] = (info.name, types_pb2.DataType.Name(info.dtype), dims)
    return described


def test_metadata_half_plus_two(prediction):
    response = prediction.GetModelMetadata(metadata_request("half_plus_two"), timeout=TIMEOUT)
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == ""
    signatures = signature_map(response)
    assert sorted(signatures) == [
        "classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2",
        "serving_default",
    ]
    serving = signatures["serving_default"]
    assert serving.method_name == "tensorflow/serving/predict"
    assert tensor_infos(serving.inputs) == {"x": ("x:0", "DT_FLOAT", [-1, 1])}
    assert tensor_infos(serving.outputs) == {"y": ("y:0", "DT_FLOAT", [-1, 1])}
    classify = signatures["classify_x_to_y"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert tensor_infos(classify.inputs) == {"inputs": ("tf_example:0", "DT_STRING", None)}


def test_metadata_multi_signatures_and_aliases(prediction):
    response = prediction.GetModelMetadata(metadata_request("multi"), timeout=TIMEOUT)
    assert response.model_spec.version.value == 7
    signatures = signature_map(response)
    assert sorted(signatures) == ["doubler", "serving_default"]
    inputs = {"floats": ("a", "DT_FLOAT", [-1, 3]), "ints": ("b", "DT_INT64", [-1])}
    for name in ("serving_default", "doubler"):
        assert tensor_infos(signatures[name].inputs) == inputs
    assert tensor_infos(signatures["serving_default"].outputs) == {
        "plus_one": ("sum", "DT_FLOAT", [-1, 3]),
        "doubled": ("twice", "DT_INT64", [-1]),
    }
    assert tensor_infos(signatures["doubler"].outputs) == {"doubled": ("twice", "DT_INT64", [-1])}


def test_metadata_dtypes_signatures(prediction):
    signatures = signature_map(
        prediction.GetModelMetadata(metadata_request("dtypes"), timeout=TIMEOUT)
    )
    assert sorted(signatures) == sorted([np_name for *_, np_name in DTYPES] + ["serving_default"])
    for _, tf_name, np_name in DTYPES:
        signature = signatures[np_name]
        assert tensor_infos(signature.inputs) == {"input": ("input", tf_name, None)}
        assert tensor_infos(signature.outputs) == {"output": ("output", tf_name, None)}
    assert signatures["serving_default"] == signatures["float32"]


@pytest.mark.parametrize(
    ("model_spec", "served"),
    [({}, 3), ({"version": 1}, 1), ({"label": "canary"}, 2)],
    ids=["latest", "version-1", "label-canary"],
)
def test_metadata_version_choice(prediction, model_spec, served):
    response = prediction.GetModelMetadata(
        metadata_request("versions", **model_spec), timeout=TIMEOUT
    )
    assert response.model_spec.name == "versions"
    assert response.model_spec.version.value == served
    signatures = signature_map(response)
    # No signatures.json: serving_default is the graph's own inputs and outputs.
    assert tensor_infos(signatures["serving_default"].inputs) == {"x": ("x", "DT_FLOAT", [-1, 1])}
    assert tensor_infos(signatures["serving_default"].outputs) == {
        "y": ("y", "DT_FLOAT", [-1, 1])
    }


# ---------------------------------------------------------------------------
# GetModelStatus


def statuses(response: get_model_status_pb2.GetModelStatusResponse):
    return [(s.version, s.state, s.status.error_code) for s in response.model_version_status]


def test_status_half_plus_two(models):
    response = models.GetModelStatus(status_request("half_plus_two"), timeout=TIMEOUT)
    assert statuses(response) == [(123, AVAILABLE, 0)]
    assert response.model_version_status[0].status.error_message == ""


@pytest.mark.parametrize(
    "model_spec",
    [{}, {"label": "canary"}, {"label": "nope"}],
    ids=["no-version", "label-is-ignored", "unknown-label-is-ignored"],
)
def test_status_lists_every_version_highest_first(models, model_spec):
    response = models.GetModelStatus(status_request("versions", **model_spec), timeout=TIMEOUT)
    assert statuses(response) == [(3, AVAILABLE, 0), (2, AVAILABLE, 0), (1, AVAILABLE, 0)]


def test_status_one_version(models):
    response = models.GetModelStatus(status_request("versions", version=2), timeout=TIMEOUT)
    assert statuses(response) == [(2, AVAILABLE, 0)]


def test_status_broken_model_ends_with_its_error(models):
    response = models.GetModelStatus(status_request("broken"), timeout=TIMEOUT)
    [status] = response.model_version_status
    assert status.version == 1
    assert status.state == END
    assert status.status.error_code != 0
    assert status.status.error_message


# ---------------------------------------------------------------------------
# Errors: code and message, as TF Serving answers them


class Prefix(str):
    """The message must start with this."""


class Contains(tuple):
    """The message must contain every one of these."""

    def __new__(cls, *parts: str) -> Contains:
        return super().__new__(cls, parts)


Message = str | Prefix | Contains


def case(case_id: str, request: Any, code: grpc.StatusCode, message: Message) -> Any:
    return pytest.param(request, code, message, id=case_id)


def bad_tensor_content() -> tensor_pb2.TensorProto:
    """Three bytes for one float: TF's Tensor::FromProto refuses it."""
    return typed(types_pb2.DT_FLOAT, [1, 1], tensor_content=b"\x00\x00\x80")


def unknown_rank() -> tensor_pb2.TensorProto:
    proto = typed(types_pb2.DT_FLOAT, [1, 1], float_val=[1.0])
    proto.tensor_shape.unknown_rank = True
    return proto


def huge(shape: Sequence[int]) -> tensor_pb2.TensorProto:
    """A shape the server must refuse before it allocates anything."""
    return typed(types_pb2.DT_FLOAT, shape, float_val=[1.0])


def size_mismatch(sent: str, expected: str, extra: str, missing: str) -> str:
    """TF Serving's VerifyRequestInputsSize message (sorted aliases, joined by ',')."""
    n_sent = len(sent.split(",")) if sent else 0
    n_expected = len(expected.split(","))
    return (
        f"input size does not match signature: {n_sent}!={n_expected} "
        f"len({{{sent}}}) != len({{{expected}}}). "
        f"Sent extra: {{{extra}}}. Missing but required: {{{missing}}}."
    )


def alias_not_found(alias: str, feed: str, sent: str) -> str:
    """TF's saved_model::GetInputValues message; this repository's signatures have no defaults."""
    return (
        f"Signature input alias: {alias}(feed name: {feed}) not found in request and no "
        f"default value provided. Inputs expected to be in the request {{{sent}}}, or default "
        f"input alias set: "
    )


X = {"x": floats([2.0])}
XV = {"x": floats([[1.0]])}  # what "versions" takes: float32 [batch, 1]
MULTI = {"floats": floats([[1, 2, 3]]), "ints": tf.make_tensor_proto(np.array([1], np.int64))}
NOT_FOUND = "Servable not found for request: "
LONG_NAME = "n" * 2000
NO_NAME = "ModelSpec has no name specified."
INVALID = Code.INVALID_ARGUMENT

PREDICT_ERRORS = [
    # Which servable (ServerCore::ServableRequestFromModelSpec, BasicManager).
    case("no-spec", predict_request(None, X), INVALID, "Missing ModelSpec"),
    case("empty-name", predict_request("", X), INVALID, NO_NAME),
    case("unknown-model", predict_request("nope", X), Code.NOT_FOUND, NOT_FOUND + "Latest(nope)"),
    case("unknown-model-version", predict_request("nope", X, version=1), Code.NOT_FOUND,
         NOT_FOUND + "Specific(nope, 1)"),
    case("unknown-version", predict_request("versions", XV, version=99), Code.NOT_FOUND,
         NOT_FOUND + "Specific(versions, 99)"),
    case("unknown-label", predict_request("versions", XV, label="nope"), INVALID,
         "Unrecognized servable version label: nope"),
    case("label-on-model-without-labels", predict_request("half_plus_two", X, label="stable"),
         INVALID, "Unrecognized servable version label: stable"),
    case("label-to-missing-version", predict_request("versions", XV, label="gone"),
         Code.NOT_FOUND, NOT_FOUND + "Specific(versions, 9)"),
    case("model-that-failed-to-load", predict_request("broken", X), Code.NOT_FOUND,
         NOT_FOUND + "Latest(broken)"),
    case("version-zero", predict_request("versions", XV, version=0), Code.NOT_FOUND,
         NOT_FOUND + "Specific(versions, 0)"),
    case("negative-version", predict_request("versions", XV, version=-1), Code.NOT_FOUND,
         NOT_FOUND + "Specific(versions, -1)"),
    case("empty-label", predict_request("versions", XV, label=""), INVALID,
         "Unrecognized servable version label: "),
    # grpc_status_util.cc cuts messages at 1024 characters.
    case("long-message-truncated", predict_request(LONG_NAME, X), Code.NOT_FOUND,
         (NOT_FOUND + f"Latest({LONG_NAME})")[:1024] + "...TRUNCATED"),
    # Signature and input keys (predict_util.cc, TF's cc/saved_model/util.cc).
    case("unknown-signature", predict_request("half_plus_two", X, signature="nope"),
         Code.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
    case("no-inputs", predict_request("half_plus_two", {}), INVALID,
         size_mismatch("", "x", "", "x")),
    case("extra-input", predict_request("half_plus_two", X | {"z": floats([1.0])}), INVALID,
         size_mismatch("x,z", "x", "z", "")),
    case("missing-one-of-two", predict_request("multi", {"floats": MULTI["floats"]}), INVALID,
         size_mismatch("floats", "floats,ints", "", "ints")),
    case("two-extra", predict_request("multi", MULTI | {"b": floats([1.0]), "a": floats([1.0])}),
         INVALID, size_mismatch("a,b,floats,ints", "floats,ints", "a,b", "")),
    case("wrong-key", predict_request("versions", {"z": floats([[1.0]])}), INVALID,
         alias_not_found("x", "x", "z")),
    case("wrong-key-of-two", predict_request("multi", {"floats": MULTI["floats"],
                                                       "z": MULTI["ints"]}),
         INVALID, alias_not_found("ints", "b", "floats,z")),
    # output_filter.
    case("unknown-output", predict_request("half_plus_two", X, output_filter=["z"]), INVALID,
         "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
    case("unknown-output-of-two", predict_request("multi", MULTI, output_filter=["sum"]), INVALID,
         "output tensor alias not found in signature: sum "
         "Outputs expected to be in the set {doubled,plus_one}."),
    case("duplicate-output", predict_request("half_plus_two", X, output_filter=["y", "y"]),
         INVALID, "duplicate output tensor alias: y"),
    # Tensors the graph cannot take: TF leaves these to its runtime, so only the code is
    # TF's; the message must name the input, what it expects and what it got.
    case("wrong-dtype-double",
         predict_request("versions", {"x": tf.make_tensor_proto(np.array([[1.0]]))}),
         INVALID, Contains("'x'", "DT_FLOAT", "DT_DOUBLE")),
    case("wrong-dtype-complex",
         predict_request("versions", {"x": tf.make_tensor_proto(np.array([[1j]], np.complex64))}),
         INVALID, Contains("'x'", "DT_FLOAT", "DT_COMPLEX64")),
    case("wrong-dtype-string",
         predict_request("versions", {"x": tf.make_tensor_proto([b"1"], shape=[1, 1])}),
         INVALID, Contains("'x'", "DT_FLOAT", "DT_STRING")),
    case("wrong-shape", predict_request("versions", {"x": floats([[1, 2], [3, 4]])}), INVALID,
         Contains("'x'", "[-1,1]", "[2,2]")),
    case("wrong-rank", predict_request("versions", {"x": floats([1.0])}), INVALID,
         Contains("'x'", "[-1,1]", "[1]")),
    # Tensors that do not decode (Tensor::FromProto fails).
    case("tensor-content-wrong-length", predict_request("versions", {"x": bad_tensor_content()}),
         INVALID, Prefix("tensor parsing error: x")),
    case("negative-dim", predict_request("versions", {"x": typed(types_pb2.DT_FLOAT, [-1, 1])}),
         INVALID, Prefix("tensor parsing error: x")),
    case("unknown-rank", predict_request("versions", {"x": unknown_rank()}),
         INVALID, Prefix("tensor parsing error: x")),
    case("dt-invalid", predict_request("versions", {"x": typed(types_pb2.DT_INVALID, [1, 1])}),
         INVALID, Prefix("tensor parsing error: x")),
    # TensorShape::IsValid: no more than 254 dims, element count within int64.
    case("shape-overflows-int64", predict_request("versions", {"x": huge([2**62, 2**62])}),
         INVALID, Prefix("tensor parsing error: x")),
    case("rank-over-254", predict_request("versions", {"x": huge([1] * 255)}),
         INVALID, Prefix("tensor parsing error: x")),
    # A valid shape whose bytes no allocator can give: Tensor::FromProto fails, which TF
    # answers INVALID_ARGUMENT; here running out of memory is RESOURCE_EXHAUSTED,
    # the code gRPC gives a request the server has no room for.
    case("too-big-to-allocate", predict_request("versions", {"x": huge([2**31, 2**31])}),
         Code.RESOURCE_EXHAUSTED, Prefix("tensor parsing error: x")),
    # Valid for TF (rank <= 254), refused by its runtime; numpy stops at 64 dims.
    case("rank-65", predict_request("versions", {"x": huge([1] * 65)}), INVALID, Contains("x")),
    # TF's order of checks: input count, then each signature input (key, then decoding),
    # then output_filter, then the runtime. A tensor under an alias the signature does
    # not have is never decoded.
    case("order-count-before-decoding",
         predict_request("versions", XV | {"z": bad_tensor_content()}),
         INVALID, size_mismatch("x,z", "x", "z", "")),
    case("order-key-before-decoding", predict_request("versions", {"z": bad_tensor_content()}),
         INVALID, alias_not_found("x", "x", "z")),
    case("order-decoding-before-output-filter",
         predict_request("versions", {"x": bad_tensor_content()}, output_filter=["z"]),
         INVALID, Prefix("tensor parsing error: x")),
    case("order-output-filter-before-runtime",
         predict_request("versions", {"x": floats([1.0, 2.0])}, output_filter=["z"]), INVALID,
         "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
]

METADATA_ERRORS = [
    case("no-spec", metadata_request(None), INVALID, "Missing ModelSpec"),
    case("no-field", metadata_request("half_plus_two", []), INVALID,
         "GetModelMetadataRequest must specify at least one metadata_field"),
    case("unknown-field", metadata_request("half_plus_two", ["foo"]), INVALID,
         "Metadata field foo is not supported"),
    case("unknown-field-after-valid", metadata_request("half_plus_two", ["signature_def", "foo"]),
         INVALID, "Metadata field foo is not supported"),
    case("empty-name", metadata_request(""), INVALID, NO_NAME),
    case("unknown-model", metadata_request("nope"), Code.NOT_FOUND, NOT_FOUND + "Latest(nope)"),
    case("unknown-version", metadata_request("versions", version=99), Code.NOT_FOUND,
         NOT_FOUND + "Specific(versions, 99)"),
    case("unknown-label", metadata_request("versions", label="nope"), INVALID,
         "Unrecognized servable version label: nope"),
]

STATUS_ERRORS = [
    case("no-spec", status_request(None), INVALID, "Missing ModelSpec"),
    case("unknown-model", status_request("nope"), Code.NOT_FOUND,
         "Could not find any versions of model nope"),
    case("unknown-version", status_request("versions", version=99), Code.NOT_FOUND,
         "Could not find version 99 of model versions"),
    # TF Serving's GetModelStatus checks no name: an empty one is just a model it lacks.
    case("empty-name", status_request(""), Code.NOT_FOUND, "Could not find any versions of model "),
]


def assert_error(error: grpc.RpcError, code: grpc.StatusCode, expected: Message) -> None:
    got = (error.code(), error.details())
    if isinstance(expected, Prefix):
        ok = got[1].startswith(expected)
    elif isinstance(expected, Contains):
        ok = all(part in got[1] for part in expected)
    else:
        ok = got[1] == expected
    assert got[0] == code and ok, f"got {got}, expected {code} with {expected!r}"


@pytest.mark.parametrize(("request_message", "code", "message"), PREDICT_ERRORS)
def test_predict_error(prediction, request_message, code, message):
    assert_error(rpc_error(prediction, "Predict", request_message), code, message)


@pytest.mark.parametrize(("request_message", "code", "message"), METADATA_ERRORS)
def test_metadata_error(prediction, request_message, code, message):
    assert_error(rpc_error(prediction, "GetModelMetadata", request_message), code, message)


@pytest.mark.parametrize(("request_message", "code", "message"), STATUS_ERRORS)
def test_status_error(models, request_message, code, message):
    assert_error(rpc_error(models, "GetModelStatus", request_message), code, message)


def test_reload_config_needs_a_model_config_list(models):
    """TF Serving's model_service_impl.cc: only ModelConfigList is taken."""
    request = model_management_pb2.ReloadConfigRequest()
    error = rpc_error(models, "HandleReloadConfigRequest", request)
    assert_error(
        error,
        Code.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. "
        "Only ModelConfigList is currently supported",
    )


# ---------------------------------------------------------------------------
# Every dtype, both ways


def sample(np_name: str) -> np.ndarray:
    """Edge values of each type, shaped [2, n] so shapes are checked too."""
    if np_name == "object":
        return np.array([[b"plain", b""], ["é日本".encode(), b"a\x00b"]], dtype=object)
    dtype = np.dtype(getattr(ml_dtypes, np_name, None) or np_name)
    if dtype == np.bool_:
        values: list[Any] = [True, False, False, True]
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [info.min, info.max, 0, 1, info.max // 3, info.min // 3]
    else:
        info = ml_dtypes.finfo(dtype)
        values = [0.0, -0.0, 1.5, -2.0, float(info.max), -float(info.max), float(info.tiny),
                  float(info.smallest_subnormal), np.inf, -np.inf, np.nan, 0.25]
        with np.errstate(over="ignore", invalid="ignore"):  # inf → NaN where no inf exists
            return np.array(values).astype(dtype).reshape(2, -1)
    return np.array(values, dtype=dtype).reshape(2, -1)


def assert_same(got: np.ndarray, sent: np.ndarray) -> None:
    """Bit for bit: dtype, shape and bytes (NaN included); strings element by element."""
    assert got.dtype == sent.dtype
    assert got.shape == sent.shape
    if sent.dtype == object:
        assert got.tolist() == sent.tolist()
    else:
        assert got.tobytes() == sent.tobytes()


def round_trip(prediction, np_name: str, proto: tensor_pb2.TensorProto) -> np.ndarray:
    request = predict_request("dtypes", {"input": proto}, signature=np_name)
    response = prediction.Predict(request, timeout=TIMEOUT)
    assert list(response.outputs) == ["output"]
    output = response.outputs["output"]
    assert output.dtype == proto.dtype
    assert response.model_spec.signature_name == np_name
    return tf.make_ndarray(output)


DTYPE_IDS = [np_name for *_, np_name in DTYPES]


@pytest.mark.parametrize(("tf_name", "np_name"), [d[1:] for d in DTYPES], ids=DTYPE_IDS)
def test_dtype_round_trip_make_tensor_proto(prediction, tf_name, np_name):
    sent = sample(np_name)
    proto = tf.make_tensor_proto(sent)
    assert types_pb2.DataType.Name(proto.dtype) == tf_name
    assert_same(round_trip(prediction, np_name, proto), sent)


@pytest.mark.parametrize(("tf_name", "np_name"), [d[1:] for d in DTYPES], ids=DTYPE_IDS)
def test_dtype_round_trip_empty_tensor(prediction, tf_name, np_name):
    sent = sample(np_name)[:, :0]
    proto = tf.make_tensor_proto(sent)
    assert_same(round_trip(prediction, np_name, proto), sent)


# The TensorProto field TF keeps each type's values in (tensor.proto, TF's tensor.cc).
TYPED_FIELDS = {
    "float32": "float_val", "float64": "double_val", "float16": "half_val",
    "bfloat16": "half_val", "float8_e4m3fn": "float8_val", "float8_e5m2": "float8_val",
    "int8": "int_val", "int16": "int_val", "int32": "int_val", "uint8": "int_val",
    "uint16": "int_val", "int64": "int64_val", "uint32": "uint32_val",
    "uint64": "uint64_val", "bool": "bool_val", "object": "string_val",
}
BY_HAND = [
    pytest.param(tf_name, np_name, encoding, id=f"{np_name}-{encoding}")
    for _, tf_name, np_name in DTYPES
    for encoding in ("typed", "tensor_content")
    if not (np_name == "object" and encoding == "tensor_content")
]


def by_hand(tf_name: str, sent: np.ndarray, encoding: str) -> tensor_pb2.TensorProto:
    """What a client without tf.make_tensor_proto sends; bfloat16 and float8 from ml_dtypes bits."""
    dtype = types_pb2.DataType.Value(tf_name)
    if encoding == "tensor_content":
        raw = sent.astype(sent.dtype.newbyteorder("<")).tobytes()
        return typed(dtype, sent.shape, tensor_content=raw)
    field = TYPED_FIELDS[sent.dtype.name]
    flat = sent.ravel()
    if field == "half_val":  # the 16 bits of float16 and bfloat16, one per int32
        values: Any = flat.view(np.uint16).tolist()
    elif field == "float8_val":  # one byte per value
        values = flat.view(np.uint8).tobytes()
    else:
        values = flat.tolist()
    return typed(dtype, sent.shape, **{field: values})


@pytest.mark.parametrize(("tf_name", "np_name", "encoding"), BY_HAND)
def test_dtype_round_trip_by_hand(prediction, tf_name, np_name, encoding):
    sent = sample(np_name)
    assert_same(round_trip(prediction, np_name, by_hand(tf_name, sent, encoding)), sent)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([b"a\x00b"], id="nul-inside"),
        pytest.param([b"\x00", b"\x00\x00"], id="only-nuls"),
        pytest.param(["é", "日本語", "🙂"], id="non-ascii"),
        pytest.param([b"", b"", b"x"], id="empty-strings"),
        pytest.param([" lead", "trail ", "tab\tnew\nline"], id="whitespace"),
    ],
)
def test_strings_round_trip_exactly(prediction, values):
    sent = np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)
    response_value = round_trip(prediction, "object", tf.make_tensor_proto(sent))
    assert response_value.tolist() == sent.tolist()


@pytest.mark.parametrize(
    "values", [[b"\xff\xfe"], [b"ok", b"bad\xc3"]], ids=["invalid-bytes", "truncated-sequence"]
)
def test_string_that_is_not_utf8_is_refused(prediction, values):
    proto = typed(types_pb2.DT_STRING, [len(values)], string_val=values)
    request = predict_request("dtypes", {"input": proto}, signature="object")
    error = rpc_error(prediction, "Predict", request)
    assert error.code() == Code.INVALID_ARGUMENT
    assert "UTF-8" in error.details()


# ---------------------------------------------------------------------------
# Size and load


def test_tensor_over_100_mb_round_trips(prediction):
    count = 26_500_000  # 106 MB of float32
    sent = np.random.default_rng(7).standard_normal(count, dtype=np.float32)
    clock = [time.perf_counter()]
    proto = tf.make_tensor_proto(sent)
    clock.append(time.perf_counter())
    request = predict_request("dtypes", {"input": proto}, signature="float32")
    response = prediction.Predict(request, timeout=120)
    clock.append(time.perf_counter())
    got = tf.make_ndarray(response.outputs["output"])
    clock.append(time.perf_counter())
    steps = zip(("make_tensor_proto", "Predict", "make_ndarray"), np.diff(clock), strict=True)
    print(", ".join(f"{step} {seconds:.2f} s" for step, seconds in steps))

    assert proto.ByteSize() > 100_000_000
    assert got.dtype == np.float32
    assert got.shape == (count,)
    assert hashlib.sha256(got.tobytes()).digest() == hashlib.sha256(sent.tobytes()).digest()
    assert np.array_equal(got, sent)


def test_64_concurrent_clients_each_get_their_own_answer(server):
    """Each client has its own channel; all start together and each checks its own answers."""
    clients, rounds = 64, 10
    barrier = threading.Barrier(clients)
    failures: list[str] = []
    answered = [0] * clients

    def client(index: int) -> None:
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                barrier.wait(timeout=60)
                for round_ in range(rounds):
                    # Values unique to this client and round, several per request.
                    x = np.arange(1 + index % 4, dtype=np.float32) + (index * 1000 + round_ * 10)
                    request = predict_request("half_plus_two", {"x": floats(x)})
                    response = stub.Predict(request, timeout=60)
                    y = np.array(response.outputs["y"].float_val, np.float32)
                    if not np.array_equal(y, x * np.float32(0.5) + np.float32(2)):
                        failures.append(f"client {index} round {round_}: sent {x}, got {y}")
                        return
                    answered[index] += 1
        except Exception as exc:  # every client's failure is reported, not just the first
            failures.append(f"client {index}: {exc!r}")

    started = time.perf_counter()
    run_concurrently(client, clients)
    print(f"{clients} clients x {rounds} requests in {time.perf_counter() - started:.2f} s")
    assert failures == []
    assert answered == [rounds] * clients
