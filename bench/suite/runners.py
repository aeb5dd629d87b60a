"""The contenders behind one interface: ``caller()`` gives a callable that sends one request.

``caller()`` is asked once per client thread, so a gRPC contender can give each
thread a channel of its own (``channels="per-thread"``) or one shared by all.
onnx-serving, onnx-serving with batching and the echo server are driven by
the very same class: the request is serialized once, sent as bytes, and the
response is taken as bytes (identity serializers), so the client's own cost
is small and identical for all three, and the difference between them is the
server's. A REST contender posts a body made once, on a keep-alive connection
per thread, and reads the answer as bytes. The in-process contenders run the
model on arrays (ONNX Runtime) or tensors (TensorFlow) made once, with the same
thread settings as the server.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import grpc
import numpy as np
import onnxruntime as ort

from bench.suite.echo_server import PATH
from bench.suite.models import BenchModel

Call = Callable[[], object]
Channels = Literal["per-thread", "shared"]
_UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
# Without a pool of its own, gRPC Python puts equal channels on one shared connection.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Contender(Protocol):
    name: str

    def caller(self) -> Call: ...

    def close(self) -> None: ...


@dataclass
class GrpcContender:
    """Predict over gRPC with a pre-serialized request; the same code for every server."""

    name: str
    address: str
    request: bytes
    channels: Channels = "per-thread"
    _open: list[grpc.Channel] = field(default_factory=list)
    _shared: Call | None = None

    def _new_call(self) -> Call:
        options = _UNLIMITED + (_OWN_CONNECTION if self.channels == "per-thread" else [])
        channel = grpc.insecure_channel(self.address, options=options)
        self._open.append(channel)
        # No serializers: bytes go out and come back untouched.
        method = channel.unary_unary(PATH)
        request = self.request
        return lambda: method(request, timeout=600)

    def caller(self) -> Call:
        if self.channels == "shared":
            if self._shared is None:
                self._shared = self._new_call()
            return self._shared
        return self._new_call()

    def close(self) -> None:
        for channel in self._open:
            channel.close()
        self._open.clear()
        self._shared = None


@dataclass
class HttpContender:
    """A POST of ``body`` to ``path`` on 127.0.0.1:``port``; a status other than 200 raises."""

    name: str
    port: int
    path: str
    body: bytes
    headers: Mapping[str, str]
    _open: list[http.client.HTTPConnection] = field(default_factory=list)

    def caller(self) -> Call:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        self._open.append(connection)
        path, body, headers = self.path, self.body, dict(self.headers)

        def call() -> None:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {answer[:300]!r}")

        return call

    def close(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()


def session_options(
    intra: int, inter: int, config: Sequence[tuple[str, str]] = ()
) -> ort.SessionOptions:
    """What onnx-serving gives a session by default: all graph optimizations, sequential
    execution, memory arena and pattern on, the thread counts it was started with, and
    the config entries its runtime.json was given."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    for key, value in config:
        options.add_session_config_entry(key, value)
    return options


class OrtContender:
    """The limit: ONNX Runtime on the same file with the same options, no transport."""

    def __init__(
        self, model: BenchModel, intra: int, inter: int, batch: int = 1,
        config: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.name = "ORT in-process" if batch == 1 else f"ORT in-process, batch {batch}"
        self.session = ort.InferenceSession(
            str(model.onnx_file), session_options(intra, inter, config),
            providers=["CPUExecutionProvider"],
        )
        names = [i.name for i in self.session.get_inputs()]
        self.feeds = {
            _onnx_name(sig.onnx_name, names): array
            for sig, array in zip(model.inputs, model.sample(batch).values(), strict=True)
        }

    def run(self) -> list[Any]:
        return list(self.session.run(None, self.feeds))

    def caller(self) -> Call:
        return self.run

    def close(self) -> None:
        pass


def _onnx_name(name: str, graph_inputs: list[str]) -> str:
    if name in graph_inputs:
        return name
    if len(graph_inputs) == 1:  # one input: no doubt which
        return graph_inputs[0]
    raise KeyError(f"signatures.json names input {name!r}; the graph has {graph_inputs}")


_TF_THREADS: tuple[int, int] | None = None


def tensorflow(intra: int, inter: int) -> Any:
    """TensorFlow with its pools sized as asked (0: its choice); fixed at first use."""
    global _TF_THREADS
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep its start-up chatter off
    import tensorflow as tf

    if _TF_THREADS is None:
        # On the CPU, as the server's default CPUExecutionProvider: like against like.
        tf.config.set_visible_devices([], "GPU")
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        _TF_THREADS = (intra, inter)
    elif (intra, inter) != _TF_THREADS:
        raise RuntimeError(f"TensorFlow's threads are already {_TF_THREADS}")
    return tf


class TensorFlowContender:
    """The original SavedModel's serving signature in TensorFlow, in this process: a lower
    bound for TF Serving, which runs the same TensorFlow behind a transport of its own."""

    name = "TF in-process"

    def __init__(self, model: BenchModel, intra: int, inter: int) -> None:
        tf = tensorflow(intra, inter)
        self._loaded = tf.saved_model.load(str(model.saved_model))
        self._function = self._loaded.signatures["serving_default"]
        self._tensors = {k: tf.constant(v) for k, v in model.sample(1).items()}

    def run(self) -> Mapping[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._function(**self._tensors).items()}

    def caller(self) -> Call:
        return self.run

    def close(self) -> None:
        pass
