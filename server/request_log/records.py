"""Request logging: a model's ``logging_config``, its sampled requests as PredictionLog.

TF Serving reads ``logging_config`` but its open-source build registers no log
collector, so nothing is ever written. Here, sampled requests are written with
their responses as ``PredictionLog`` records in TFRecord files named from
``filename_prefix``: the format of TF Serving's warmup file, so a log file is
a warmup file and a request set for ``onnx-serving compare --requests`` as it is.

Predict, Classify, Regress and MultiInference are logged, from every front end:
the serving core asks this hook (``serving/request_log.py``) for each request and
hands a sampled one's inputs and answer here, and the records are the messages
TF Serving's gRPC API carries (``server/messages``; a REST request is logged as
the request it amounts to). A sampled request copies its outputs (they may be
buffers the next request reuses); the record is built and written off the
request's path, by ``writer.RecordWriter``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

import numpy as np

from onnx_serving.codec.model_spec import fill_spec
from onnx_serving.codec.tensors import encode_into
from onnx_serving.protos.tensorflow_serving.apis import prediction_log_pb2
from onnx_serving.server.messages.classify import (
    classification_response,
    multi_inference_response,
    regression_response,
)
from onnx_serving.server.messages.input import fill_input
from onnx_serving.server.messages.model_spec import fill_served
from onnx_serving.server.messages.predict import fill_response
from onnx_serving.server.repository.model_config import ModelConfig, RequestLogConfig
from onnx_serving.server.request_log.writer import Observe, Record, RecordWriter, RequestLogOptions
from onnx_serving.server.runtime.model import Outputs
from onnx_serving.server.serving.classify import Classifications
from onnx_serving.server.serving.multi_inference import Task, TaskResult
from onnx_serving.server.serving.predict import Log, Served

_Answer = TypeVar("_Answer")


class RequestLogs:
    """Every model's request log, the core's ``RequestLogHook``; ``observe(model, written)``
    counts each record."""

    def __init__(
        self, options: RequestLogOptions, observe: Observe = lambda model, written: None,
    ) -> None:
        self._configs: dict[str, RequestLogConfig] = {}
        self._writer = RecordWriter(options, observe)

    def set_configs(self, configs: Iterable[ModelConfig]) -> None:
        """The models to log, from the config in force; others stop being logged."""
        self._configs = {c.name: c.request_log for c in configs if c.request_log is not None}

    def _sample(self, name: str) -> RequestLogConfig | None:
        config = self._configs.get(name)
        return config if config is not None and _sampled(config.sampling_rate) else None

    def predict_logger(
        self, name: str, version: int | None, label: str | None, output_filter: Sequence[str]
    ) -> Log | None:
        """None unless this Predict (for the model, version or label asked) is sampled."""
        config = self._sample(name)
        if config is None:
            return None
        timestamp = int(time.time())

        def record(inputs: Mapping[str, np.ndarray], served_version: int, signature: str,
                   outputs: Outputs) -> None:
            kept = {alias: np.array(array, copy=True) for alias, array in outputs.items()}
            size = sum(_nbytes(a) for a in inputs.values()) + sum(map(_nbytes, kept.values()))

            def build() -> prediction_log_pb2.PredictionLog:
                served = Served(name, served_version, signature)
                entry = _metadata(config, served, timestamp)
                request = entry.predict_log.request
                fill_spec(request.model_spec, name, version=version, label=label,
                          signature=signature)
                for alias, array in inputs.items():
                    encode_into(request.inputs[alias], array)
                request.output_filter.extend(output_filter)
                fill_response(entry.predict_log.response, served, kept)
                return entry

            self._put(Record(name, config.filename_prefix, build, size))

        return record

    def classify_logger(
        self, name: str, version: int | None, label: str | None, examples: np.ndarray
    ) -> Callable[[Served, Classifications], None] | None:
        """None unless this Classify is sampled; else what records its answer."""
        def fill(entry: prediction_log_pb2.PredictionLog, served: Served,
                 kept: Classifications) -> None:
            fill_spec(entry.classify_log.request.model_spec, name, version=version, label=label,
                      signature=served.signature)
            fill_input(entry.classify_log.request.input, examples)
            entry.classify_log.response.CopyFrom(classification_response(served, kept))

        return self._answer_logger(name, _copied_classifications, fill, _nbytes(examples))

    def regress_logger(
        self, name: str, version: int | None, label: str | None, examples: np.ndarray
    ) -> Callable[[Served, np.ndarray], None] | None:
        """None unless this Regress is sampled; else what records its answer."""
        def fill(entry: prediction_log_pb2.PredictionLog, served: Served,
                 kept: np.ndarray) -> None:
            fill_spec(entry.regress_log.request.model_spec, name, version=version, label=label,
                      signature=served.signature)
            fill_input(entry.regress_log.request.input, examples)
            entry.regress_log.response.CopyFrom(regression_response(served, kept))

        return self._answer_logger(
            name, lambda values: np.array(values, copy=True), fill, _nbytes(examples)
        )

    def _answer_logger(
        self,
        name: str,
        copy: Callable[[_Answer], _Answer],
        fill: Callable[[prediction_log_pb2.PredictionLog, Served, _Answer], None],
        request_size: int,
    ) -> Callable[[Served, _Answer], None] | None:
        """Samples; the answer is copied on the request's path, the record built off it."""
        config = self._sample(name)
        if config is None:
            return None
        timestamp = int(time.time())

        def record(served: Served, answer: _Answer) -> None:
            kept = copy(answer)

            def build() -> prediction_log_pb2.PredictionLog:
                entry = _metadata(config, served, timestamp)
                fill(entry, served, kept)
                return entry

            self._put(Record(name, config.filename_prefix, build,
                             request_size + _answer_size(kept)))

        return record

    def multi_inference_logger(
        self, name: str, version: int | None, label: str | None, tasks: Sequence[Task],
        examples: np.ndarray,
    ) -> Callable[[list[TaskResult]], None] | None:
        """None unless this MultiInference (logged under its first task's model) is
        sampled; else what records its answer."""
        config = self._sample(name)
        if config is None:
            return None
        timestamp = int(time.time())

        def record(results: list[TaskResult]) -> None:
            kept = [replace(r, result=_copied(r.result)) for r in results]
            size = _nbytes(examples) + sum(_answer_size(r.result) for r in kept)

            def build() -> prediction_log_pb2.PredictionLog:
                entry = _metadata(config, kept[0].served, timestamp)
                request = entry.multi_inference_log.request
                for task in tasks:
                    asked = request.tasks.add(method_name=task.method_name)
                    fill_spec(asked.model_spec, task.model_name, version=version, label=label,
                              signature=task.signature_name)
                fill_input(request.input, examples)
                entry.multi_inference_log.response.CopyFrom(multi_inference_response(kept))
                return entry

            self._put(Record(name, config.filename_prefix, build, size))

        return record

    def _put(self, record: Record) -> None:
        self._writer.put(record)

    def close(self) -> None:
        """See ``RecordWriter.close``: bounded by ``close_seconds`` whatever the disk does."""
        self._writer.close()


def _sampled(rate: float) -> bool:
    return rate >= 1.0 or (rate > 0.0 and random.random() < rate)


def _metadata(config: RequestLogConfig, served: Served,
              timestamp: int) -> prediction_log_pb2.PredictionLog:
    """A record whose metadata names what answered."""
    entry = prediction_log_pb2.PredictionLog()
    meta = entry.log_metadata
    fill_served(meta.model_spec, served)
    meta.sampling_config.sampling_rate = config.sampling_rate
    meta.timestamp_secs = timestamp
    return entry


def _copied(result: Classifications | np.ndarray) -> Classifications | np.ndarray:
    """A result that outlives the request (it may view buffers the next one reuses)."""
    if isinstance(result, Classifications):
        return _copied_classifications(result)
    return np.array(result, copy=True)


def _nbytes(array: np.ndarray) -> int:
    """The memory an array keeps alive: an object array's strings as well."""
    if array.dtype != object:
        return int(array.nbytes)
    return int(array.nbytes) + sum(
        len(v) for v in array.reshape(-1) if isinstance(v, bytes | str)
    )


def _answer_size(answer: object) -> int:
    """The bytes a copied answer (classifications or regression values) keeps alive."""
    if isinstance(answer, Classifications):
        return sum(_nbytes(a) for a in (answer.labels, answer.scores) if a is not None)
    return _nbytes(answer) if isinstance(answer, np.ndarray) else 0


def _copied_classifications(result: Classifications) -> Classifications:
    return Classifications(
        None if result.labels is None else np.array(result.labels, copy=True),
        None if result.scores is None else np.array(result.scores, copy=True),
    )
