"""The load a sweep puts on each setting: requests, and clients sending them in a closed loop.

Requests are serialized once (generated from the model's signature, or taken from a
TFRecord file of PredictionLogs: TF Serving's warmup file or a request log) and sent
as bytes, so the client's own cost is small and the same for every setting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from onnx_serving.client import Client, make_tensor_proto
from onnx_serving.codec.model_spec import fill_spec
from onnx_serving.codec.prediction_log import read_prediction_logs
from onnx_serving.codec.served_model import signature_key
from onnx_serving.codec.tensors import numpy_dtype
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2

PREDICT = "/tensorflow.serving.PredictionService/Predict"
_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
            ("grpc.use_local_subchannel_pool", 1)]


def generated(address: str, model: str, signature: str = "", batch: int = 1) -> list[bytes]:
    """One request of random inputs shaped by the served signature (unknown dims: 1,
    the batch dimension: ``batch``)."""
    with Client(address) as client:
        signatures = client.metadata(model)
    name = signature_key(signature)
    if name not in signatures:
        raise ValueError(f"model {model} has no signature {name!r}; it has {sorted(signatures)}")
    request = predict_pb2.PredictRequest()
    fill_spec(request.model_spec, model, signature=signature)
    rng = np.random.default_rng(0)
    for alias, info in signatures[name].inputs.items():
        dims = [d.size for d in info.tensor_shape.dim]
        shape = [batch if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(dims)]
        dtype = numpy_dtype(info.dtype)
        if dtype.kind == "O":
            array: np.ndarray = np.full(shape, b"a", dtype=object)
        elif dtype.kind in "iu":
            array = rng.integers(0, 2, shape).astype(dtype)
        elif dtype.kind == "b":
            array = rng.integers(0, 2, shape).astype(bool)
        else:
            array = rng.random(shape).astype(dtype)
        request.inputs[alias].CopyFrom(make_tensor_proto(array))
    return [request.SerializeToString()]


def from_file(path: Path, model: str) -> list[bytes]:
    """The Predict requests of a PredictionLog file, pointed at ``model``."""
    requests = []
    for log in read_prediction_logs(path):
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = predict_pb2.PredictRequest()
        request.CopyFrom(log.predict_log.request)
        request.model_spec.name = model
        request.model_spec.ClearField("version")
        requests.append(request.SerializeToString())
    if not requests:
        raise ValueError(f"{path} holds no Predict requests")
    return requests


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # seconds
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        self.seconds += other.seconds
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else float("nan")


def run(address: str, requests: Sequence[bytes], clients: int, seconds: float,
        warmup: float) -> Result:
    """``clients`` threads, one channel each, sending the next request when the last
    returns; a request counts when it ends inside the window after ``warmup``."""
    start = time.perf_counter() + 0.05
    opens, closes = start + warmup, start + warmup + seconds
    result = Result(seconds=seconds)
    lock = threading.Lock()

    def client(index: int) -> None:
        latencies, errors, first = [], 0, ""
        with grpc.insecure_channel(address, options=_OPTIONS) as channel:
            call = channel.unary_unary(PREDICT)
            i = index
            while (began := time.perf_counter()) < closes:
                try:
                    call(requests[i % len(requests)], timeout=60)
                except grpc.RpcError as exc:
                    if opens <= time.perf_counter() <= closes:
                        errors += 1
                        first = first or f"{exc.code().name}: {exc.details()}"
                    continue
                finally:
                    i += 1
                ended = time.perf_counter()
                if opens <= ended <= closes:
                    latencies.append(ended - began)
        with lock:
            result.latencies += latencies
            result.errors += errors
            result.first_error = result.first_error or first

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result
