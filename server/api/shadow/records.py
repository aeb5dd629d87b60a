"""Disagreements as PredictionLog TFRecords, by the request log's writer.

Each disagreeing request is written twice, with each side's answer: to
``<log_prefix>-baseline-*.tfrecord`` with the baseline's, and to
``<log_prefix>-onnx-*.tfrecord`` with ours. Each file alone is a warmup file and a
request set for ``onnx-serving compare --requests`` as it is. The two records of a
pair carry the same ``log_metadata.request_origin``, ``shadow <n> <side>``, with the
status of a side that refused (its record's response is then empty).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from google.protobuf.message import Message

from onnx_serving.protos.tensorflow_serving.apis import prediction_log_pb2
from onnx_serving.server.api.shadow.judge import Refusal
from onnx_serving.server.request_log.writer import Observe, Record, RecordWriter, RequestLogOptions

SIDES = ("baseline", "onnx")


class Disagreements:
    def __init__(self, options: RequestLogOptions, observe: Observe) -> None:
        self._writer = RecordWriter(options, observe)
        self._pairs = itertools.count(1)

    def put(self, model: str, prefix: str, log_field: str, sampling_rate: float,
            request: Message, answers: dict[str, Message | Refusal]) -> None:
        pair, timestamp = next(self._pairs), int(time.time())
        for side in SIDES:
            answer = answers[side]

            def build(answer: Message | Refusal = answer, side: str = side,
                      ) -> prediction_log_pb2.PredictionLog:
                entry = prediction_log_pb2.PredictionLog()
                meta = entry.log_metadata
                meta.sampling_config.sampling_rate = sampling_rate
                meta.timestamp_secs = timestamp
                meta.request_origin = f"shadow {pair} {side}"
                log = getattr(entry, log_field)
                log.request.CopyFrom(request)
                if isinstance(answer, Refusal):
                    meta.request_origin += f" {answer.code}: {answer.details}"
                    log.SetInParent()
                else:
                    log.response.CopyFrom(answer)
                    spec = getattr(answer, "model_spec", None)
                    if spec is not None:
                        meta.model_spec.CopyFrom(spec)
                return entry

            size = request.ByteSize() + (0 if isinstance(answer, Refusal) else answer.ByteSize())
            self._writer.put(Record(model, Path(f"{prefix}-{side}"), build, size))

    def close(self) -> None:
        self._writer.close()
