"""The core's classifications and regressions → Classify, Regress and MultiInference
responses, and a MultiInferenceRequest's tasks."""

from __future__ import annotations

import numpy as np

from onnx_serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    regression_pb2,
)
from onnx_serving.server.messages.model_spec import fill_served
from onnx_serving.server.serving.classify import Classifications
from onnx_serving.server.serving.multi_inference import Task, TaskResult
from onnx_serving.server.serving.predict import Served


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
    fill_served(response.model_spec, served)
    fill_classifications(response.result, classifications)
    return response


def regression_response(served: Served, values: np.ndarray) -> regression_pb2.RegressionResponse:
    response = regression_pb2.RegressionResponse()
    fill_served(response.model_spec, served)
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
        fill_served(entry.model_spec, task.served)
        if isinstance(task.result, Classifications):
            fill_classifications(entry.classification_result, task.result)
        else:
            _fill_regressions(entry.regression_result, task.result)
    return response
