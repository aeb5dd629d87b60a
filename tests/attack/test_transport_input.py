"""Attack cases for the transports: bad input over gRPC and REST, and hostile HTTP.

Every case gets a clear status and message, and the server answers a good
request right after it. The bounds (timeouts, header and gzip sizes, open
streams) are set small by flags here, so each case takes a second at most.
"""

from __future__ import annotations

import gzip
import queue
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from onnx_serving.codec.tensors import make_tensor_proto
from onnx_serving.protos.tensorflow.core.framework import tensor_pb2
from onnx_serving.protos.tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tests.server_process import ServerProcess, free_port

TIMEOUT = 30
STREAMS = 2  # --grpc_max_streams; the pool holds --grpc_max_threads=2 more threads
MAX_HEADER_BYTES = 4096
MAX_GZIP_BYTES = 1 << 20
IDLE_MS = 300
READ_MS = 600


@dataclass
class Target:
    process: ServerProcess
    rest_port: int

    def channel(self) -> grpc.Channel:
        return self.process.channel()

    def rest(self, path: str) -> str:
        return f"http://127.0.0.1:{self.rest_port}{path}"

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.rest_port), timeout=TIMEOUT)


def start(repository: Path, log: Path, *flags: str) -> Target:
    rest_port = free_port()
    process = ServerProcess(
        [f"--model_config_file={repository}", "--allow_version_labels_for_unavailable_models",
         "--max_num_load_retries=0", f"--rest_api_port={rest_port}", *flags],
        log,
    ).start()
    return Target(process, rest_port)


@pytest.fixture(scope="module")
def served(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    target = start(
        repository, tmp_path_factory.mktemp("attack-transport") / "server.log",
            "--enable_grpc_healthcheck_service",
            "--grpc_max_threads=2",
            f"--grpc_max_streams={STREAMS}",
            f"--rest_api_max_header_bytes={MAX_HEADER_BYTES}",
            f"--rest_api_max_gzip_bytes={MAX_GZIP_BYTES}",
            f"--rest_api_idle_timeout_in_ms={IDLE_MS}",
            f"--rest_api_read_timeout_in_ms={READ_MS}",
            "--enable_access_log",
    )
    yield target
    target.process.stop()


def predict_request(model: str = "half_plus_two", **spec: Any) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    return request


def assert_still_answers(server: Target) -> None:
    """A good request over each transport, after the attack."""
    request = predict_request()
    request.inputs["x"].CopyFrom(make_tensor_proto(np.array([2.0], np.float32)))
    with server.channel() as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=TIMEOUT
        )
    assert list(response.outputs["y"].float_val) == [3.0]
    answer = requests.post(server.rest("/v1/models/half_plus_two:predict"),
                           json={"instances": [2.0]}, timeout=TIMEOUT)
    assert answer.json() == {"predictions": [3.0]}


# ---------------------------------------------------------------------------
# Bad input over gRPC


def _tensor(dtype: int, shape: list[int], **values: Any) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    for field, value in values.items():
        if isinstance(value, bytes):
            setattr(proto, field, value)
        else:
            getattr(proto, field).extend(value)
    return proto


FLOAT, INT32, STRING = 1, 3, 7
GRPC_CASES = {
    "unknown model": (predict_request("nope"), {}, grpc.StatusCode.NOT_FOUND, "nope"),
    "unknown version": (predict_request(version=99), {}, grpc.StatusCode.NOT_FOUND, "99"),
    "unknown label": (predict_request("versions", version_label="nope"), {},
                      grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label"),
    "label of a missing version": (predict_request("versions", version_label="gone"), {},
                                   grpc.StatusCode.NOT_FOUND, "versions"),
    "unknown signature": (predict_request(signature_name="nope"), {},
                          grpc.StatusCode.FAILED_PRECONDITION, 'signature key "nope" not found'),
    "unknown input": (predict_request(), {"nope": _tensor(FLOAT, [1], float_val=[1.0])},
                      grpc.StatusCode.INVALID_ARGUMENT, "nope"),
    "no input": (predict_request(), {}, grpc.StatusCode.INVALID_ARGUMENT, "x"),
    "wrong dtype": (predict_request(), {"x": _tensor(INT32, [1], int_val=[1])},
                    grpc.StatusCode.INVALID_ARGUMENT, "DT_INT32"),
    "tensor_content short of the shape": (
        predict_request(), {"x": _tensor(FLOAT, [4], tensor_content=b"\0" * 5)},
        grpc.StatusCode.INVALID_ARGUMENT, "",
    ),
    "negative dimension": (predict_request(), {"x": _tensor(FLOAT, [-2], float_val=[1.0])},
                           grpc.StatusCode.INVALID_ARGUMENT, ""),
    "invalid dtype": (predict_request(), {"x": _tensor(0, [1], float_val=[1.0])},
                      grpc.StatusCode.INVALID_ARGUMENT, ""),
    "string for a float": (predict_request(), {"x": _tensor(STRING, [1], string_val=[b"a"])},
                           grpc.StatusCode.INVALID_ARGUMENT, ""),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_bad_grpc_input(served: Target, case: str) -> None:
    request, inputs, code, fragment = GRPC_CASES[case]
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    with served.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=TIMEOUT
        )
    assert raised.value.code() == code, raised.value.details()
    assert raised.value.details() and fragment in raised.value.details()
    assert_still_answers(served)


def test_undecodable_grpc_message(served: Target) -> None:
    with served.channel() as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as raised:
            call(b"\xff\xff\xff\xff garbage", timeout=TIMEOUT)
    assert raised.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert_still_answers(served)


# ---------------------------------------------------------------------------
# Bad input over REST

BOMB = gzip.compress(b"[" * (MAX_GZIP_BYTES + 1), compresslevel=9)  # 1 KB on the wire
REST_CASES: dict[str, tuple[str, bytes, dict[str, str], int, str]] = {
    "garbage JSON": ("half_plus_two:predict", b"{]", {}, 400, "JSON Parse error"),
    "empty body": ("half_plus_two:predict", b"", {}, 400, "The document is empty"),
    "not an object": ("half_plus_two:predict", b"[1]", {}, 400, "Is not object"),
    "string for a float": ("half_plus_two:predict", b'{"instances": ["a"]}', {}, 400,
                           "is not of expected type: float"),
    "ragged instances": ("dtypes:predict", b'{"instances": [[1], [1, 2]]}', {}, 400, ""),
    "unknown model": ("nope:predict", b'{"instances": [1]}', {}, 404, "nope"),
    "unknown version": ("half_plus_two/versions/99:predict", b'{"instances": [1]}', {}, 404,
                        "99"),
    "version past int64": ("half_plus_two/versions/99999999999999999999:predict",
                           b'{"instances": [1]}', {}, 400, "Failed to convert version"),
    "unknown label": ("versions/labels/nope:predict", b'{"instances": [1]}', {}, 400,
                      "Unrecognized servable version label"),
    "malformed path": ("half_plus_two/versions/x:predict", b"{}", {}, 400, "Malformed request"),
    "unknown signature": ("half_plus_two:predict",
                          b'{"signature_name": "nope", "instances": [1]}', {}, 400, "nope"),
    "integer past Python's digit limit": (
        "half_plus_two:predict", b'{"instances": [' + b"9" * 5000 + b"]}", {}, 400,
        "JSON Parse error: Number too big to be stored in double. at offset: 15",
    ),
    "integer past a double for an int64 input": (
        "dtypes:predict", b'{"signature_name": "int64", "instances": [' + b"9" * 400 + b"]}", {},
        400, "JSON Parse error: Number too big to be stored in double.",
    ),
    "not gzip": ("half_plus_two:predict", b"plain", {"Content-Encoding": "gzip"}, 400,
                 "Cannot inflate the gzip request body"),
    "gzip bomb": ("half_plus_two:predict", BOMB, {"Content-Encoding": "gzip"}, 413,
                  f"inflates to more than the limit of {MAX_GZIP_BYTES} bytes"),
}


@pytest.mark.parametrize("case", list(REST_CASES))
def test_bad_rest_input(served: Target, case: str) -> None:
    path, body, headers, status, fragment = REST_CASES[case]
    response = requests.post(served.rest(f"/v1/models/{path}"), data=body,
                             headers=headers, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert_still_answers(served)


# ---------------------------------------------------------------------------
# Hostile HTTP: raw sockets


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


HEAD = b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: test\r\n"


def test_idle_connections_are_closed(served: Target) -> None:
    """A connection that never sends, and one silent after its answer, are closed."""
    with served.connect() as fresh, served.connect() as used:
        body = b'{"instances": [2.0]}'
        used.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert read_until_closed(fresh) == b""
        answer = read_until_closed(used)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b'{"predictions": [3.0]}')
    assert_still_answers(served)


@pytest.mark.parametrize("sent", [
    pytest.param(b"POST /v1/models/half_plus_two:pre", id="partial request line"),
    pytest.param(HEAD + b"Content-Type: application/json\r\n", id="partial headers"),
    pytest.param(HEAD + b"Content-Length: 100\r\n\r\n{\"instances\"", id="partial body"),
])
def test_partial_requests_time_out(served: Target, sent: bytes) -> None:
    with served.connect() as sock:
        sock.sendall(sent)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert f"did not arrive within {READ_MS} ms".encode() in answer
    assert_still_answers(served)


def test_a_client_gone_mid_body_is_cancelled_not_a_server_error(served: Target) -> None:
    """Nobody is left to answer: counted as CANCELLED, with no traceback in the log."""
    logged = len(served.process.logs())
    for _ in range(3):
        with served.connect() as sock:
            sock.sendall(HEAD + b"Content-Length: 100\r\n\r\n{\"instances\"")
    deadline = time.monotonic() + TIMEOUT
    while (since := served.process.logs()[logged:]).count("status=CANCELLED") < 3:
        assert time.monotonic() < deadline, since
        time.sleep(0.05)
    assert "Traceback" not in since and "Unexpected error" not in since, since
    assert_still_answers(served)


def test_a_trickle_of_headers_times_out(served: Target) -> None:
    """Slowloris: a header line every tenth of the timeout does not keep the request alive."""
    with served.connect() as sock:
        sock.sendall(HEAD)
        sock.settimeout(READ_MS / 10_000)
        answer = b""
        for line in range(1000):  # far longer than the read timeout
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % line)
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # closed as we sent: the answer is waiting
                pass
            break
        sock.settimeout(TIMEOUT)
        answer += read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert_still_answers(served)


def test_huge_headers_are_refused(served: Target) -> None:
    with served.connect() as sock:
        sock.sendall(HEAD + b"X-Big: " + b"a" * (2 * MAX_HEADER_BYTES) + b"\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert f"limit of {MAX_HEADER_BYTES} bytes".encode() in answer
    assert_still_answers(served)


def test_garbage_http_is_refused(served: Target) -> None:
    with served.connect() as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert_still_answers(served)


def test_connections_past_the_limit_are_refused(
    repository: Path, tmp_path: Path
) -> None:
    server = start(repository, tmp_path / "server.log", "--rest_api_max_connections=3")
    try:
        held = [server.connect() for _ in range(3)]
        with server.connect() as refused:
            answer = read_until_closed(refused)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Too many open connections" in answer
        for sock in held:
            sock.close()
        deadline = time.monotonic() + TIMEOUT
        while True:  # the server sees the closes a moment later
            with server.connect() as sock:
                sock.sendall(b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: t\r\n"
                             b"Connection: close\r\n\r\n")
                if read_until_closed(sock).startswith(b"HTTP/1.1 200 ") \
                        or time.monotonic() > deadline:
                    break
        assert_still_answers(server)
    finally:
        server.process.stop()


# ---------------------------------------------------------------------------
# Streams never starve unary calls


def _held_reflection_stream(
    channel: grpc.Channel,
) -> tuple[queue.Queue[reflection_pb2.ServerReflectionRequest | None], Iterator[Any]]:
    requests_: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter(requests_.get, None)
    )
    return requests_, responses


def test_open_streams_never_starve_unary_calls(served: Target) -> None:
    """Many more idle streams than the pool has threads: past --grpc_max_streams they are
    refused at once, and Predict and GetModelStatus still answer."""
    list_services = reflection_pb2.ServerReflectionRequest(list_services="")
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "half_plus_two"
    with served.channel() as channel:
        reflections, admitted = [], 0
        for _ in range(8):
            sent, responses = _held_reflection_stream(channel)
            sent.put(list_services)
            try:
                assert next(responses).list_services_response.service
                admitted += 1
                reflections.append((sent, responses))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "--grpc_max_streams" in (exc.details() or "")
        assert admitted == STREAMS
        assert_still_answers(served)
        model_service = model_service_pb2_grpc.ModelServiceStub(channel)
        assert model_service.GetModelStatus(status, timeout=TIMEOUT).model_version_status
        for sent, responses in reflections:  # ended by the client: their threads come back
            sent.put(None)
            assert list(responses) == []

        watches, admitted = [], 0
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(8):
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            try:
                assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
                admitted += 1
                watches.append(watch)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert admitted == STREAMS
        assert_still_answers(served)
        assert model_service.GetModelStatus(status, timeout=TIMEOUT).model_version_status
        for watch in watches:
            watch.cancel()
