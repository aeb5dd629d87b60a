"""Classify, Regress and MultiInference messages ⇄ the core: for gRPC, warmup and REST.

An ``Input`` becomes one DT_STRING vector of serialized tf.Example, as TF
Serving's InputToSerializedExampleTensor builds it: with a context, each
element is the context's bytes followed by the example's, so parsing merges
the two and the example's features win.
"""

from __future__ import annotations

import numpy as np

from onnx_serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    regression_pb2,
)
from onnx_serving.server.api.grpc.model_spec import fill_spec
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.serving.classify import Classifications, classify, regress
from onnx_serving.server.serving.multi_inference import Task, TaskResult, multi_inference
from onnx_serving.server.serving.predict import Served


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    examples = np.empty(len(serialized), dtype=object)
    examples[:] = serialized
    return examples


def fill_classifications(
    result: classification_pb2.ClassificationResult, classifications: Classifications
) -> None:
    """Labels are left empty when the signature has only scores, and scores 0 when it has
    only classes, as in TF Serving."""
    labels, scores = classifications.labels, classifications.scores
    shape = labels.shape if labels is not None else scores.shape  # type: ignore[union-attr]
    label_rows = labels.tolist() if labels is not None else None
    score_rows = scores.tolist() if scores is not None else None
    for row in range(shape[0]):
        classes = result.classifications.add().classes
        for column in range(shape[1]):
            entry = classes.add()
            if label_rows is not None:
                entry.label = _text(label_rows[row][column])
            if score_rows is not None:
                entry.score = score_rows[row][column]


def _text(label: bytes | str) -> str:
    """Labels are proto3 strings, which protobuf requires to be UTF-8: other bytes are
    replaced (TF Serving sends them raw, which its clients then fail to parse)."""
    return label if isinstance(label, str) else label.decode("utf-8", "replace")


def classification_response(
    served: Served, classifications: Classifications
) -> classification_pb2.ClassificationResponse:
    response = classification_pb2.ClassificationResponse()
    fill_spec(response.model_spec, served.name, served.version, served.signature)
    fill_classifications(response.result, classifications)
    return response


def regression_response(served: Served, values: np.ndarray) -> regression_pb2.RegressionResponse:
    response = regression_pb2.RegressionResponse()
    fill_spec(response.model_spec, served.name, served.version, served.signature)
    _fill_regressions(response.result, values)
    return response


def _fill_regressions(result: regression_pb2.RegressionResult, values: np.ndarray) -> None:
    for value in values.tolist():
        result.regressions.add(value=value)


def tasks(request: inference_pb2.MultiInferenceRequest) -> list[Task]:
    return [
        Task(task.model_spec.name, task.model_spec.signature_name, task.method_name)
        for task in request.tasks
    ]


def multi_inference_response(results: list[TaskResult]) -> inference_pb2.MultiInferenceResponse:
    response = inference_pb2.MultiInferenceResponse()
    for task in results:
        entry = response.results.add()
        fill_spec(entry.model_spec, task.served.name, task.served.version, task.served.signature)
        if isinstance(task.result, Classifications):
            fill_classifications(entry.classification_result, task.result)
        else:
            _fill_regressions(entry.regression_result, task.result)
    return response


# On a version already in hand (warmup's, while it loads); version 0 is echoed.


def classify_pinned(
    model: LoadedModel, request: classification_pb2.ClassificationRequest, method_check: bool
) -> classification_pb2.ClassificationResponse:
    return classify(
        model, request.model_spec.name, 0, request.model_spec.signature_name,
        serialized_examples(request.input), classification_response, method_check=method_check,
    )


def regress_pinned(
    model: LoadedModel, request: regression_pb2.RegressionRequest, method_check: bool
) -> regression_pb2.RegressionResponse:
    return regress(
        model, request.model_spec.name, 0, request.model_spec.signature_name,
        serialized_examples(request.input), regression_response, method_check=method_check,
    )


def multi_inference_pinned(
    model: LoadedModel, request: inference_pb2.MultiInferenceRequest, method_check: bool
) -> inference_pb2.MultiInferenceResponse:
    return multi_inference(
        model, 0, tasks(request), serialized_examples(request.input), multi_inference_response,
        method_check=method_check,
    )
