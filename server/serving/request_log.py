"""The request log as the core sees it: a hook asked, per request, whether to record it.

The core calls these before serving; None means this request is not sampled.
What a record holds and where it is written is the implementer's business
(``server/request_log``): the core knows no message or file format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from onnx_serving.server.serving.classify import Classifications
from onnx_serving.server.serving.multi_inference import Task, TaskResult
from onnx_serving.server.serving.predict import Log, Served


class RequestLogHook(Protocol):
    def predict_logger(
        self, name: str, version: int | None, label: str | None, output_filter: Sequence[str]
    ) -> Log | None: ...

    def classify_logger(
        self, name: str, version: int | None, label: str | None, examples: np.ndarray
    ) -> Callable[[Served, Classifications], None] | None: ...

    def regress_logger(
        self, name: str, version: int | None, label: str | None, examples: np.ndarray
    ) -> Callable[[Served, np.ndarray], None] | None: ...

    def multi_inference_logger(
        self, name: str, version: int | None, label: str | None, tasks: Sequence[Task],
        examples: np.ndarray,
    ) -> Callable[[list[TaskResult]], None] | None: ...
