"""PredictionLog records from a TFRecord file: TF Serving's warmup file and request logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from google.protobuf.message import DecodeError

from onnx_serving.codec.tfrecord import TFRecordError, read_records
from onnx_serving.protos.tensorflow_serving.apis import prediction_log_pb2

PredictionLog = prediction_log_pb2.PredictionLog


class PredictionLogError(ValueError):
    """A file that is not a TFRecord of PredictionLog, with the record at fault."""


def read_prediction_logs(path: Path) -> Iterator[PredictionLog]:
    """Every record in order. A damaged file or record raises once reached."""
    try:
        for index, data in enumerate(read_records(path)):
            try:
                yield PredictionLog.FromString(data)
            except DecodeError as exc:
                raise PredictionLogError(
                    f"{path}: record {index} is not a PredictionLog: {exc}"
                ) from exc
    except TFRecordError as exc:
        raise PredictionLogError(str(exc)) from exc
