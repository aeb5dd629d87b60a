"""MultiInference on a pinned version: several Classify and Regress signatures of one
model over one batch of examples (TF Serving's multi_inference.cc)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from onnx_serving.codec.served_model import signature_key
from onnx_serving.server.errors import InvalidArgument, Unimplemented
from onnx_serving.server.metrics import StageClock
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.runtime.signature import Signature, lookup_signature
from onnx_serving.server.serving.classify import (
    CLASSIFY_METHOD,
    INPUTS,
    OUTPUTS,
    REGRESS_METHOD,
    Classifications,
    check_classification,
    check_examples,
    check_regression,
    classification_outputs,
    classification_result,
    regression_result,
)
from onnx_serving.server.serving.predict import Served

T = TypeVar("T")


@dataclass(frozen=True)
class Task:
    model_name: str
    signature_name: str
    method_name: str


@dataclass(frozen=True)
class TaskResult:
    served: Served
    # A task's answer: Classifications for classify, one float32 per example for regress.
    result: Classifications | np.ndarray


def multi_inference(
    model: LoadedModel,
    version: int,
    tasks: Sequence[Task],
    examples: np.ndarray,
    encode: Callable[[list[TaskResult]], T],
    *,
    method_check: bool = False,
    observe: Callable[[str, float], None] | None = None,
    deadline: Deadline | None = None,
) -> T:
    """Every task is checked before any runs; then each signature runs on the examples
    and the results are checked in task order."""
    clock = StageClock(observe)
    signatures = [_check_task(model, tasks, index, method_check) for index in range(len(tasks))]
    check_examples(examples)
    clock.lap("decode")
    outputs = []
    for task, signature in zip(tasks, signatures, strict=True):
        wanted = (
            classification_outputs(signature) if task.method_name == CLASSIFY_METHOD
            else [OUTPUTS]
        )
        with model.predict(signature, {INPUTS: examples}, wanted, deadline) as values:
            outputs.append({alias: array.copy() for alias, array in values.items()})
    clock.lap("run")
    results = []
    for task, signature, values in zip(tasks, signatures, outputs, strict=True):
        served = Served(task.model_name, version, signature.name)
        if task.method_name == CLASSIFY_METHOD:
            result: Classifications | np.ndarray = classification_result(
                signature, len(examples), values
            )
        else:
            result = regression_result(len(examples), values)
        results.append(TaskResult(served, result))
    answer = encode(results)
    clock.lap("encode")
    return answer


def _check_task(
    model: LoadedModel, tasks: Sequence[Task], index: int, method_check: bool
) -> Signature:
    task = tasks[index]
    if not task.model_name:
        raise InvalidArgument("Found ModelSpec with an empty model name.")
    if task.model_name != tasks[0].model_name:
        raise InvalidArgument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name."
        )
    key = signature_key(task.signature_name)
    if any(signature_key(t.signature_name) == key for t in tasks[:index]):
        raise InvalidArgument(f"Duplicate evaluation of signature: {key}")
    signature = lookup_signature(
        model.signatures, task.signature_name,
        lambda key: InvalidArgument(f"Requested signature not found in model graph: {key}"),
    )
    if task.method_name == CLASSIFY_METHOD:
        check_classification(signature, method_check)
    elif task.method_name == REGRESS_METHOD:
        check_regression(signature, method_check)
    else:
        raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
    return signature
