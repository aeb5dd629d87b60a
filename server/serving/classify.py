"""Classify and Regress on a pinned version, as TF Serving's classifier.cc and regressor.cc.

Both take a batch of serialized tf.Example (a DT_STRING vector the front end
built, context already merged) and feed it to the signature's one input,
``inputs``; what the graph makes of it (a server-side parse stage, or a graph
that reads strings) is the signature's business. Signature checks, output checks
and their messages are TF Serving's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from google.protobuf import text_format

from onnx_serving.codec.dtypes import tf_name
from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.metrics import StageClock
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.runtime.model import LoadedModel, Outputs
from onnx_serving.server.runtime.signature import Signature, format_shape, lookup_signature
from onnx_serving.server.serving.predict import Served
from onnx_serving.server.serving.signature_def import signature_def

T = TypeVar("T")
R = TypeVar("R")

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INPUTS = "inputs"
CLASSES = "classes"
SCORES = "scores"
OUTPUTS = "outputs"


@dataclass(frozen=True)
class Classifications:
    """One row per example, one column per class; an absent output is None."""

    labels: np.ndarray | None  # strings (str or bytes objects), [examples, classes]
    scores: np.ndarray | None  # float32, [examples, classes]


def classify(
    model: LoadedModel,
    name: str,
    version: int,
    signature_name: str,
    examples: np.ndarray,
    encode: Callable[[Served, Classifications], T],
    *,
    method_check: bool = False,
    observe: Callable[[str, float], None] | None = None,
    deadline: Deadline | None = None,
) -> T:
    """``examples``: serialized tf.Example, shape [N]."""
    signature = _find(model.signatures, signature_name)
    check_classification(signature, method_check)
    return _run(
        model, name, version, signature, examples, classification_outputs(signature),
        lambda outputs: classification_result(signature, len(examples), outputs),
        encode, observe, deadline,
    )


def regress(
    model: LoadedModel,
    name: str,
    version: int,
    signature_name: str,
    examples: np.ndarray,
    encode: Callable[[Served, np.ndarray], T],
    *,
    method_check: bool = False,
    observe: Callable[[str, float], None] | None = None,
    deadline: Deadline | None = None,
) -> T:
    """``encode`` gets one float32 value per example."""
    signature = _find(model.signatures, signature_name)
    check_regression(signature, method_check)
    return _run(
        model, name, version, signature, examples, [OUTPUTS],
        lambda outputs: regression_result(len(examples), outputs),
        encode, observe, deadline,
    )


def _run(
    model: LoadedModel,
    name: str,
    version: int,
    signature: Signature,
    examples: np.ndarray,
    outputs: list[str],
    result: Callable[[Outputs], R],
    encode: Callable[[Served, R], T],
    observe: Callable[[str, float], None] | None,
    deadline: Deadline | None,
) -> T:
    clock = StageClock(observe)
    check_examples(examples)
    clock.lap("decode")
    with model.predict(signature, {INPUTS: examples}, outputs, deadline) as values:
        clock.lap("run")
        answer = encode(Served(name, version, signature.name), result(values))
    clock.lap("encode")
    return answer


def _find(signatures: Mapping[str, Signature], requested: str) -> Signature:
    """Classify's and Regress's lookup (TF Serving's classifier.cc and regressor.cc)."""
    return lookup_signature(
        signatures, requested,
        lambda key: InvalidArgument(f"No signature was found with the name: {key}"),
    )


def check_examples(examples: np.ndarray) -> None:
    if examples.size == 0:
        raise InvalidArgument("Input is empty.")


def debug_string(signature: Signature) -> str:
    """The SignatureDef in protobuf text format, as TF's messages quote it."""
    return text_format.MessageToString(signature_def(signature))


def _check_method(signature: Signature, method: str, what: str, enabled: bool) -> None:
    """Only with --enable_signature_method_name_check, as in TF Serving."""
    if enabled and signature.method_name != method:
        raise InvalidArgument(
            f"Expected {what} signature method_name to be {method}. "
            f"Was: {signature.method_name}"
        )


def check_classification(signature: Signature, method_check: bool) -> None:
    """TF Serving's PreProcessClassification."""
    _check_method(signature, CLASSIFY_METHOD, "classification", method_check)
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise InvalidArgument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    if INPUTS not in signature.inputs:
        raise InvalidArgument(
            f"No classification inputs found in SignatureDef: {debug_string(signature)}"
        )
    if CLASSES not in signature.outputs and SCORES not in signature.outputs:
        raise InvalidArgument(
            f'Expected classification signature outputs to contain at least one of "{CLASSES}" '
            f'or "{SCORES}". Signature was: {debug_string(signature)}'
        )


def check_regression(signature: Signature, method_check: bool) -> None:
    """TF Serving's PreProcessRegression."""
    _check_method(signature, REGRESS_METHOD, "regression", method_check)
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise InvalidArgument("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise InvalidArgument(
            f"No regression inputs found in SignatureDef: {debug_string(signature)}"
        )
    if OUTPUTS not in signature.outputs:
        raise InvalidArgument(
            f"No regression outputs found in SignatureDef: {debug_string(signature)}"
        )


def classification_outputs(signature: Signature) -> list[str]:
    return [alias for alias in (CLASSES, SCORES) if alias in signature.outputs]


def classification_result(signature: Signature, count: int, outputs: Outputs) -> Classifications:
    """TF Serving's PostProcessClassificationResult: checks, then the values copied out
    (the outputs may be buffers the next request reuses)."""
    labels = outputs.get(CLASSES)
    scores = outputs.get(SCORES)
    if labels is not None:
        _check_classification_output(labels, "classes", "DT_STRING", count)
    if scores is not None:
        _check_classification_output(scores, "scores", "DT_FLOAT", count)
    if labels is not None and scores is not None and labels.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {labels.shape[1]} vs. {scores.shape[1]}"
        )
    return Classifications(
        None if labels is None else labels.copy(),
        None if scores is None else scores.copy(),
    )


def _check_classification_output(array: np.ndarray, what: str, dtype: str, count: int) -> None:
    if array.ndim != 2:
        raise InvalidArgument(
            f"Expected Tensor shape: [batch_size num_classes] but got {format_shape(array.shape)}"
        )
    if tf_name(array.dtype) != dtype:
        raise InvalidArgument(f"Expected {what} Tensor of {dtype}. Got: {tf_name(array.dtype)}")
    if array.shape[0] != count:
        raise InvalidArgument(
            f"Expected {what} output batch size of {count}. Got: {array.shape[0]}"
        )


def regression_result(count: int, outputs: Outputs) -> np.ndarray:
    """TF Serving's PostProcessRegressionResult: one float32 per example, copied out."""
    values = outputs[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {format_shape(values.shape)}"
        )
    if values.shape[0] != count:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {count} vs. {values.shape[0]}"
        )
    if values.dtype != np.float32:
        raise InvalidArgument(
            f"Expected output Tensor of DT_FLOAT.  Got: {tf_name(values.dtype)}"
        )
    return values.reshape(-1).copy()
