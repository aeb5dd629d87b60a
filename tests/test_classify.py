"""Classify, Regress and MultiInference over gRPC, with the real tensorflow-serving-api client.

The ``classifier`` test model (tests/models.py) has a signature for every
output shape and type these APIs meet, over serialized tf.Example parsed on the
server; expected messages are TF Serving's (servables/tensorflow/classifier.cc,
regressor.cc, multi_inference.cc, util.cc).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

Code = grpc.StatusCode
TIMEOUT = 30
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def example(**features: float | list[float] | bytes) -> tf.train.Example:
    feature = {}
    for key, value in features.items():
        if isinstance(value, bytes):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        else:
            values = value if isinstance(value, list) else [value]
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def with_input(
    request: Any, *examples: tf.train.Example, context: tf.train.Example | None = None
) -> Any:
    if context is None:
        for e in examples:
            request.input.example_list.examples.add().CopyFrom(e)
    else:
        listed = request.input.example_list_with_context
        listed.context.CopyFrom(context)
        for e in examples:
            listed.examples.add().CopyFrom(e)
    return request


def classify_request(
    signature: str, *examples: tf.train.Example, model: str = "classifier", **kwargs: Any
) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    return with_input(request, *examples, **kwargs)


def regress_request(
    signature: str, *examples: tf.train.Example, model: str = "classifier", **kwargs: Any
) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    return with_input(request, *examples, **kwargs)


def multi_request(
    tasks: list[tuple[str, str, str]], *examples: tf.train.Example
) -> inference_pb2.MultiInferenceRequest:
    """``tasks``: (model, signature, method) each."""
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    return with_input(request, *examples)


def classes(result: classification_pb2.ClassificationResult) -> list[list[tuple[str, float]]]:
    return [[(c.label, c.score) for c in row.classes] for row in result.classifications]


TWO = (example(x=2.0), example(x=0.5))


# ---------------------------------------------------------------------------
# Answers


def test_classify_labels_and_scores(prediction):
    response = prediction.Classify(classify_request("classify_both", *TWO), timeout=TIMEOUT)
    assert classes(response.result) == [[("2", 2.0), ("4", 4.0)], [("0.5", 0.5), ("1", 1.0)]]
    spec = response.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == (
        "classifier", 1, "classify_both"
    )


def test_classify_with_only_labels_or_only_scores(prediction):
    labels = prediction.Classify(classify_request("classify_labels", *TWO), timeout=TIMEOUT)
    assert classes(labels.result) == [[("2", 0.0), ("4", 0.0)], [("0.5", 0.0), ("1", 0.0)]]
    scores = prediction.Classify(classify_request("classify_scores", *TWO), timeout=TIMEOUT)
    assert classes(scores.result) == [[("", 2.0), ("", 4.0)], [("", 0.5), ("", 1.0)]]


def test_classify_ignores_the_method_name_by_default(prediction):
    """TF Serving checks method_name only with --enable_signature_method_name_check."""
    response = prediction.Classify(classify_request("predict_method", *TWO), timeout=TIMEOUT)
    assert classes(response.result)[0] == [("", 2.0), ("", 4.0)]


def test_context_is_merged_into_each_example_and_examples_win(prediction):
    """InputToSerializedExampleTensor: context bytes, then the example's: the example wins."""
    request = regress_request(
        "regress_1d", example(), example(x=1.0), context=example(x=5.0, other=b"unused")
    )
    response = prediction.Regress(request, timeout=TIMEOUT)
    assert [r.value for r in response.result.regressions] == [5.0, 1.0]


def test_regress_takes_batch_or_batch_by_one(prediction):
    flat = prediction.Regress(regress_request("regress_1d", *TWO), timeout=TIMEOUT)
    assert [r.value for r in flat.result.regressions] == [2.0, 0.5]
    column = prediction.Regress(
        regress_request("regress_x_to_y2", *TWO, model="half_plus_two"), timeout=TIMEOUT
    )
    assert [r.value for r in column.result.regressions] == [4.0, 3.25]
    assert column.model_spec.signature_name == "regress_x_to_y2"


def test_multi_inference_runs_every_task_on_the_same_examples(prediction):
    request = multi_request(
        [("classifier", "classify_both", CLASSIFY), ("classifier", "regress_1d", REGRESS)], *TWO
    )
    request.tasks[0].model_spec.version.value = 1
    response = prediction.MultiInference(request, timeout=TIMEOUT)
    first, second = response.results
    assert classes(first.classification_result)[1] == [("0.5", 0.5), ("1", 1.0)]
    assert [r.value for r in second.regression_result.regressions] == [2.0, 0.5]
    assert [(r.model_spec.signature_name, r.model_spec.version.value)
            for r in response.results] == [("classify_both", 1), ("regress_1d", 1)]


# ---------------------------------------------------------------------------
# Errors: TF Serving's codes and messages


def assert_error(stub: Any, method: str, request: Any, code: Code, *parts: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request, timeout=TIMEOUT)
    got = (caught.value.code(), caught.value.details())
    assert got[0] == code and all(p in got[1] for p in parts), got


def _signature_quoted(start: str) -> tuple[str, ...]:
    """The message quotes the SignatureDef in text format, as TF's DebugString."""
    return (start, 'method_name: "tensorflow/serving/', "inputs {\n  key: ")


INVALID = Code.INVALID_ARGUMENT
CLASSIFY_ERRORS = [
    ("no_spec", classification_pb2.ClassificationRequest(), INVALID, ("Missing ModelSpec",)),
    ("no_model", classify_request("classify_both", *TWO, model="nope"), Code.NOT_FOUND,
     ("Servable not found for request: Latest(nope)",)),
    ("no_signature", classify_request("nope", *TWO), INVALID,
     ("No signature was found with the name: nope",)),
    ("default_signature", classify_request("", *TWO), INVALID,
     ("Expected one input Tensor.",)),
    ("two_inputs", classify_request("two_inputs", *TWO), INVALID,
     ("Expected one input Tensor.",)),
    ("three_outputs", classify_request("classify_three", *TWO), INVALID,
     ("Expected one or two output Tensors, found 3",)),
    ("input_not_inputs", classify_request("x_input", *TWO), INVALID,
     *[_signature_quoted("No classification inputs found in SignatureDef: ")]),
    ("no_classes_or_scores", classify_request("classify_unnamed", *TWO), INVALID,
     ('Expected classification signature outputs to contain at least one of "classes" or '
      '"scores". Signature was: ', 'key: "probabilities"')),
    ("no_input", classify_request("classify_both"), INVALID, ("Input is empty.",)),
    ("empty_list", classify_request("classify_both", context=example(x=1.0)), INVALID,
     ("Input is empty.",)),
    ("unparsable_example", classify_request("classify_both", example(y=1.0)), INVALID,
     ("Feature: x (data type: float) is required but could not be found.",)),
    ("class_score_mismatch", classify_request("classify_mismatch", *TWO), INVALID,
     ("Tensors class and score should match in dim_size(1). Got 3 vs. 2",)),
    ("scores_1d", classify_request("classify_1d", *TWO), INVALID,
     ("Expected Tensor shape: [batch_size num_classes] but got [2]",)),
    ("scores_double", classify_request("classify_double", *TWO), INVALID,
     ("Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE",)),
    ("classes_float", classify_request("classify_float_classes", *TWO), INVALID,
     ("Expected classes Tensor of DT_STRING. Got: DT_FLOAT",)),
    ("scores_batch", classify_request("classify_short", *TWO), INVALID,
     ("Expected scores output batch size of 2. Got: 1",)),
]


@pytest.mark.parametrize(("request_message", "code", "parts"),
                         [pytest.param(*c[1:], id=c[0]) for c in CLASSIFY_ERRORS])
def test_classify_error(prediction, request_message, code, parts):
    assert_error(prediction, "Classify", request_message, code, *parts)


REGRESS_ERRORS = [
    ("no_spec", regression_pb2.RegressionRequest(), INVALID, ("Missing ModelSpec",)),
    ("no_signature", regress_request("nope", *TWO), INVALID,
     ("No signature was found with the name: nope",)),
    ("two_outputs", regress_request("classify_both", *TWO), INVALID,
     ("Expected one output Tensor.",)),
    ("input_not_inputs", regress_request("x_input", *TWO), INVALID,
     *[_signature_quoted("No regression inputs found in SignatureDef: ")]),
    ("output_not_outputs", regress_request("regress_unnamed", *TWO), INVALID,
     *[_signature_quoted("No regression outputs found in SignatureDef: ")]),
    ("no_input", regress_request("regress_1d"), INVALID, ("Input is empty.",)),
    ("wide", regress_request("regress_wide", *TWO), INVALID,
     ("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
      "[2,2]",)),
    ("int", regress_request("regress_int", *TWO), INVALID,
     ("Expected output Tensor of DT_FLOAT.  Got: DT_INT64",)),
    ("batch", regress_request("regress_short", *TWO), INVALID,
     ("Input batch size did not match output batch size: 2 vs. 1",)),
    # TF's half_plus_two feeds the examples to a float input here: its runtime refuses.
    ("float_input", regress_request("regress_x2_to_y3", *TWO, model="half_plus_two"), INVALID,
     ("input 'inputs' expects DT_FLOAT",)),
]


@pytest.mark.parametrize(("request_message", "code", "parts"),
                         [pytest.param(*c[1:], id=c[0]) for c in REGRESS_ERRORS])
def test_regress_error(prediction, request_message, code, parts):
    assert_error(prediction, "Regress", request_message, code, *parts)


def _tasks(*tasks: tuple[str, str, str]) -> inference_pb2.MultiInferenceRequest:
    return multi_request(list(tasks), *TWO)


MULTI_ERRORS = [
    ("no_tasks", _tasks(), INVALID, ("ModelSpec has no name specified.",)),
    ("other_model", _tasks(("classifier", "regress_1d", REGRESS),
                           ("half_plus_two", "regress_x_to_y", REGRESS)), INVALID,
     ("All ModelSpecs in a MultiInferenceRequest must access the same model name.",)),
    ("empty_name", _tasks(("classifier", "regress_1d", REGRESS), ("", "classify_both", CLASSIFY)),
     INVALID, ("Found ModelSpec with an empty model name.",)),
    ("duplicate", _tasks(("classifier", "regress_1d", REGRESS),
                         ("classifier", "regress_1d", CLASSIFY)), INVALID,
     ("Duplicate evaluation of signature: regress_1d",)),
    ("no_signature", _tasks(("classifier", "nope", REGRESS)), INVALID,
     ("Requested signature not found in model graph: nope",)),
    ("predict_method", _tasks(("classifier", "regress_1d", "tensorflow/serving/predict")),
     Code.UNIMPLEMENTED, ("Unsupported signature method_name: tensorflow/serving/predict",)),
    ("wrong_kind", _tasks(("classifier", "classify_both", REGRESS)), INVALID,
     ("Expected one output Tensor.",)),
    ("no_input", multi_request([("classifier", "regress_1d", REGRESS)]), INVALID,
     ("Input is empty.",)),
    ("bad_output", _tasks(("classifier", "classify_both", CLASSIFY),
                          ("classifier", "regress_short", REGRESS)), INVALID,
     ("Input batch size did not match output batch size: 2 vs. 1",)),
]


@pytest.mark.parametrize(("request_message", "code", "parts"),
                         [pytest.param(*c[1:], id=c[0]) for c in MULTI_ERRORS])
def test_multi_inference_error(prediction, request_message, code, parts):
    assert_error(prediction, "MultiInference", request_message, code, *parts)


def test_an_input_kind_this_server_does_not_know_is_empty(prediction):
    """An Input with neither list set counts no examples, as in TF Serving."""
    request = classify_request("classify_both")
    request.input.CopyFrom(input_pb2.Input())
    assert_error(prediction, "Classify", request, INVALID, "Input is empty.")


# ---------------------------------------------------------------------------
# REST's examples JSON → tf.Example, as TF Serving's MakeExampleFromJsonObject builds them


def test_json_examples_become_tensorflows_examples():
    from onnx_serving.server.api.rest.classify_request import read_examples
    from onnx_serving.server.messages.input import serialized_examples

    document = {
        "context": {"country": "pt", "weights": [0.5, 1e40]},
        "examples": [
            {"age": 30, "flag": True, "raw": {"b64": "AP8="}, "big": 2**70, "empty": [],
             "words": ["a", "é"], "nan": float("nan")},
            {"age": [-1, 2**63 - 1]},
        ],
    }
    serialized = serialized_examples(read_examples(document))
    context = tf.train.Example(features=tf.train.Features(feature={
        "country": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"pt"])),
        "weights": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, float("inf")])),
    }))
    first = tf.train.Example(features=tf.train.Features(feature={
        "age": tf.train.Feature(int64_list=tf.train.Int64List(value=[30])),
        "flag": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
        "raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x00\xff"])),
        "big": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0**70])),
        "empty": tf.train.Feature(),
        "words": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", "é".encode()])),
        "nan": tf.train.Feature(float_list=tf.train.FloatList(value=[float("nan")])),
    }))
    second = tf.train.Example(features=tf.train.Features(feature={
        "age": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1, 2**63 - 1])),
    }))
    for got, want in zip(serialized, [first, second], strict=True):
        merged = tf.train.Example.FromString(got)
        expected = tf.train.Example()
        expected.MergeFrom(context)
        expected.MergeFrom(want)
        # NaN != NaN: compare the text forms.
        assert str(merged) == str(expected)
