"""Classify and Regress results → {"results": ...}, as TF's MakeJsonFromClassificationResult
and MakeJsonFromRegressionResult write them: ``[[label, score], ...]`` per example, or
one value per example. Scores and values are written as TF writes floats."""

from __future__ import annotations

import numpy as np

from onnx_serving.server.api.rest.tensor_to_json import element_texts
from onnx_serving.server.serving.classify import Classifications
from onnx_serving.server.serving.predict import Served


def classification_json(served: Served, classifications: Classifications) -> str:
    labels, scores = classifications.labels, classifications.scores
    shape = labels.shape if labels is not None else scores.shape  # type: ignore[union-attr]
    count = shape[0] * shape[1]
    # Absent classes are empty labels, absent scores 0, as in the gRPC answer.
    label_texts = element_texts(labels) if labels is not None else ['""'] * count
    score_texts = (
        element_texts(scores) if scores is not None
        else element_texts(np.zeros(count, np.float32))
    )
    pairs = [f"[{label}, {score}]" for label, score in zip(label_texts, score_texts, strict=True)]
    rows = (
        "[" + ", ".join(pairs[row * shape[1]:(row + 1) * shape[1]]) + "]"
        for row in range(shape[0])
    )
    return '{"results": [' + ", ".join(rows) + "]}"


def regression_json(served: Served, values: np.ndarray) -> str:
    return '{"results": [' + ", ".join(element_texts(values)) + "]}"
