"""Request logging: a model's ``logging_config``, with a collector that writes files.

TF Serving reads ``logging_config`` but its open-source build registers no log
collector, so nothing is ever written. Here, sampled requests are written with
their responses as ``PredictionLog`` records in TFRecord files named from
``filename_prefix``: the format of TF Serving's warmup file, so a log file is
a warmup file and a request set for ``onnx-serving compare --requests`` as it is.

Predict, Classify, Regress and MultiInference are logged, from every front end:
the serving core hands each sampled request's inputs and answer here, and the
records are the messages TF Serving's gRPC API carries (a REST request is logged
as the request it amounts to).

Nothing is written on a request's path. A sampled request copies its outputs
(they may be buffers the next request reuses) and puts a record on a bounded
queue; a full queue drops the record and counts it, never waits. One thread
turns records into protobuf and appends them to files, starting a new file
when one reaches its size or the warmup limit of records, and deleting the
oldest beyond the count kept, so the logs are bounded in total.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np

from onnx_serving.codec.tensors import encode_into
from onnx_serving.codec.tfrecord import frame_record
from onnx_serving.protos.tensorflow_serving.apis import input_pb2, model_pb2, prediction_log_pb2
from onnx_serving.server.api.grpc.examples import (
    classification_response,
    multi_inference_response,
    regression_response,
)
from onnx_serving.server.config import ModelConfig, RequestLogConfig
from onnx_serving.server.runtime.model import Outputs
from onnx_serving.server.serving.classify import Classifications
from onnx_serving.server.serving.multi_inference import Task, TaskResult
from onnx_serving.server.serving.predict import Log, Served
from onnx_serving.server.warmup import MAX_RECORDS

log = logging.getLogger(__name__)

_FLUSH_EVERY = 256
_Answer = TypeVar("_Answer")


@dataclass(frozen=True)
class RequestLogOptions:
    max_file_bytes: int = 64 << 20
    max_files: int = 10  # per filename_prefix and server process; the oldest go first
    queue_size: int = 1024  # records waiting to be written; more are dropped


# What a record is built from, on the writer thread.
Build = Callable[[], prediction_log_pb2.PredictionLog]


@dataclass(frozen=True)
class _Record:
    model: str
    prefix: Path
    build: Build


class RequestLogs:
    """Every model's request log; ``observe(model, written)`` counts each record."""

    def __init__(
        self, options: RequestLogOptions,
        observe: Callable[[str, bool], None] = lambda model, written: None,
    ) -> None:
        self._options = options
        self._observe = observe
        self._configs: dict[str, RequestLogConfig] = {}
        self._queue: queue.Queue[_Record | None] = queue.Queue(max(1, options.queue_size))
        self._files: dict[Path, _RotatingFile] = {}
        self._thread = threading.Thread(target=self._write, name="request-log", daemon=True)
        self._thread.start()

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

            def build() -> prediction_log_pb2.PredictionLog:
                entry = _metadata(config, Served(name, served_version, signature), timestamp)
                request = entry.predict_log.request
                _asked(request.model_spec, name, version, label, signature)
                for alias, array in inputs.items():
                    encode_into(request.inputs[alias], array)
                request.output_filter.extend(output_filter)
                response = entry.predict_log.response
                response.model_spec.CopyFrom(entry.log_metadata.model_spec)
                for alias, array in kept.items():
                    encode_into(response.outputs[alias], array)
                return entry

            self._put(_Record(name, config.filename_prefix, build))

        return record

    def classify_logger(
        self, name: str, version: int | None, label: str | None, examples: np.ndarray
    ) -> Callable[[Served, Classifications], None] | None:
        """None unless this Classify is sampled; else what records its answer."""
        def fill(entry: prediction_log_pb2.PredictionLog, served: Served,
                 kept: Classifications) -> None:
            _asked(entry.classify_log.request.model_spec, name, version, label, served.signature)
            _fill_input(entry.classify_log.request.input, examples)
            entry.classify_log.response.CopyFrom(classification_response(served, kept))

        return self._answer_logger(name, _copied_classifications, fill)

    def regress_logger(
        self, name: str, version: int | None, label: str | None, examples: np.ndarray
    ) -> Callable[[Served, np.ndarray], None] | None:
        """None unless this Regress is sampled; else what records its answer."""
        def fill(entry: prediction_log_pb2.PredictionLog, served: Served,
                 kept: np.ndarray) -> None:
            _asked(entry.regress_log.request.model_spec, name, version, label, served.signature)
            _fill_input(entry.regress_log.request.input, examples)
            entry.regress_log.response.CopyFrom(regression_response(served, kept))

        return self._answer_logger(name, lambda values: np.array(values, copy=True), fill)

    def _answer_logger(
        self,
        name: str,
        copy: Callable[[_Answer], _Answer],
        fill: Callable[[prediction_log_pb2.PredictionLog, Served, _Answer], None],
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

            self._put(_Record(name, config.filename_prefix, build))

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

            def build() -> prediction_log_pb2.PredictionLog:
                entry = _metadata(config, kept[0].served, timestamp)
                request = entry.multi_inference_log.request
                for task in tasks:
                    asked = request.tasks.add(method_name=task.method_name)
                    _asked(asked.model_spec, task.model_name, version, label,
                           task.signature_name)
                _fill_input(request.input, examples)
                entry.multi_inference_log.response.CopyFrom(multi_inference_response(kept))
                return entry

            self._put(_Record(name, config.filename_prefix, build))

        return record

    def _put(self, record: _Record) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._observe(record.model, False)

    def close(self) -> None:
        """Writes what is queued, then closes the files."""
        self._queue.put(None)
        self._thread.join()

    def _write(self) -> None:
        written = 0
        while (record := self._queue.get()) is not None:
            self._write_one(record)
            written += 1
            # Readable as soon as the queue runs dry; under load every so many records.
            if self._queue.empty() or written % _FLUSH_EVERY == 0:
                self._flush()
        self._flush()
        for file in self._files.values():
            file.close()

    def _write_one(self, record: _Record) -> None:
        try:
            data = frame_record(record.build().SerializeToString())
            file = self._files.get(record.prefix)
            if file is None:
                file = self._files[record.prefix] = _RotatingFile(record.prefix, self._options)
            file.write(data)
        except (OSError, ValueError) as exc:  # a full disk, a value the codec refuses
            log.error("Request log of model %s: record not written: %s", record.model, exc)
            self._observe(record.model, False)
            return
        self._observe(record.model, True)

    def _flush(self) -> None:
        for prefix, file in self._files.items():
            try:
                file.flush()
            except OSError as exc:
                log.error("Request log %s: %s", prefix, exc)


def _sampled(rate: float) -> bool:
    return rate >= 1.0 or (rate > 0.0 and random.random() < rate)


def _metadata(config: RequestLogConfig, served: Served,
              timestamp: int) -> prediction_log_pb2.PredictionLog:
    """A record whose metadata names what answered."""
    entry = prediction_log_pb2.PredictionLog()
    meta = entry.log_metadata
    meta.model_spec.name, meta.model_spec.signature_name = served.name, served.signature
    meta.model_spec.version.value = served.version
    meta.sampling_config.sampling_rate = config.sampling_rate
    meta.timestamp_secs = timestamp
    return entry


def _asked(spec: model_pb2.ModelSpec, name: str, version: int | None, label: str | None,
           signature: str) -> None:
    """A logged request's model_spec: the version or label as the request asked."""
    spec.name, spec.signature_name = name, signature
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label


def _fill_input(request_input: input_pb2.Input, examples: np.ndarray) -> None:
    """The examples as the model got them (a context already merged into each)."""
    for serialized in examples.reshape(-1):
        request_input.example_list.examples.add().MergeFromString(bytes(serialized))


def _copied(result: Classifications | np.ndarray) -> Classifications | np.ndarray:
    """A result that outlives the request (it may view buffers the next one reuses)."""
    if isinstance(result, Classifications):
        return _copied_classifications(result)
    return np.array(result, copy=True)


def _copied_classifications(result: Classifications) -> Classifications:
    return Classifications(
        None if result.labels is None else np.array(result.labels, copy=True),
        None if result.scores is None else np.array(result.scores, copy=True),
    )


class _RotatingFile:
    """``<prefix>-<time>-<pid>-<n>.tfrecord`` files, at most ``max_files`` of them."""

    def __init__(self, prefix: Path, options: RequestLogOptions) -> None:
        self._prefix = prefix
        self._options = options
        self._stream: BinaryIO | None = None
        self._size = self._records = self._count = 0
        self._kept: collections.deque[Path] = collections.deque()

    def write(self, data: bytes) -> None:
        full = self._size + len(data) > self._options.max_file_bytes and self._size > 0
        if self._stream is None or full or self._records >= MAX_RECORDS:
            self._rotate()
        assert self._stream is not None
        self._stream.write(data)
        self._size += len(data)
        self._records += 1

    def _rotate(self) -> None:
        self.close()
        self._count += 1
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(f"{self._prefix}-{stamp}-{os.getpid()}-{self._count:05d}.tfrecord")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = path.open("wb")
        self._size = self._records = 0
        self._kept.append(path)
        while len(self._kept) > max(1, self._options.max_files):
            self._kept.popleft().unlink(missing_ok=True)

    def flush(self) -> None:
        if self._stream is not None:
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
