"""tensorflow_model_server flags with an effect here, seen on the real server.

One server takes a typical TF deployment's flags: CORS on REST, a GPU memory
fraction (no GPU here: it starts and serves), flags with no effect (logged once
each), and gRPC channel arguments whose keepalive pings and connection age are
watched on a raw HTTP/2 connection.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port

TIMEOUT = 10
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING, _GOAWAY = 0x4, 0x6, 0x7
_ACK = 0x1
MAX_AGE_MS = 1500


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    tmp = tmp_path_factory.mktemp("flags")
    rest_port = free_port()
    server = ServerProcess(
        [
            f"--model_base_path={EXAMPLES / 'models/half_plus_two'}",
            f"--rest_api_port={rest_port}",
            "--rest_api_enable_cors_support=true",
            "--per_process_gpu_memory_fraction=0.5",
            "--xla_cpu_compilation_enabled=true",
            "--saved_model_tags=serve",
            "--enable_profiler=false",
            "--grpc_channel_arguments=grpc.keepalive_time_ms=300,grpc.keepalive_timeout_ms=20000,"
            f"grpc.keepalive_permit_without_calls=1,grpc.max_connection_age_ms={MAX_AGE_MS},"
            "grpc.lb_policy_name=grpclb",
        ],
        tmp / "server.log",
    ).start()
    yield server, rest_port
    server.stop()


def test_serves_with_tf_flags_and_logs_the_ones_without_effect(server) -> None:
    process, _ = server
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0]))
    with grpc.insecure_channel(process.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert stub.Predict(request, timeout=TIMEOUT).outputs["y"].float_val == [3.0]
    logs = process.logs()
    for flag in ("xla_cpu_compilation_enabled=true", "saved_model_tags=serve",
                 "enable_profiler=false"):
        assert logs.count(f"Flag --{flag} has no effect on onnx-serving") == 1, flag


def test_cors_headers_on_every_api_answer(server) -> None:
    _, rest_port = server
    base = f"http://127.0.0.1:{rest_port}/v1/models/default"
    answers = [
        requests.post(f"{base}:predict", json={"instances": [2.0]}, timeout=TIMEOUT),
        requests.post(f"{base}:predict", json={"nope": 1}, timeout=TIMEOUT),  # an error
        requests.get(base, timeout=TIMEOUT),
        requests.options(f"{base}:predict", headers={"Origin": "https://app.example"},
                         timeout=TIMEOUT),
    ]
    assert [a.status_code for a in answers] == [200, 400, 200, 200]
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-allow-methods"] == "POST, GET"
        assert answer.headers["access-control-allow-headers"] == "Content-Type"


def _frames(sock: socket.socket, seconds: float) -> list[tuple[int, int, float]]:
    """(type, flags, seconds since the connection opened) of each frame the server sends in
    ``seconds``; SETTINGS are acknowledged, keepalive PINGs deliberately are not."""
    started = time.monotonic()
    sock.sendall(_PREFACE + struct.pack(">I", 0)[1:] + bytes([_SETTINGS, 0]) + bytes(4))
    frames, buffer = [], b""
    while (left := seconds - (time.monotonic() - started)) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags = buffer[3], buffer[4]
            buffer = buffer[9 + length:]
            frames.append((kind, flags, time.monotonic() - started))
            if kind == _SETTINGS and not flags & _ACK:
                sock.sendall(bytes(3) + bytes([_SETTINGS, _ACK]) + bytes(4))
    return frames


def test_keepalive_and_max_connection_age_channel_arguments(server) -> None:
    process, _ = server
    with socket.create_connection(("127.0.0.1", process.port), timeout=TIMEOUT) as sock:
        frames = _frames(sock, MAX_AGE_MS / 1000 * 1.2 + 1.5)
    pings = [at for kind, flags, at in frames if kind == _PING and not flags & _ACK]
    goaways = [at for kind, _, at in frames if kind == _GOAWAY]
    assert pings and pings[0] < 1.5, frames  # keepalive_time_ms=300 on an idle connection
    # max_connection_age_ms (gRPC adds up to 10% jitter) ends the connection with GOAWAY.
    assert goaways and goaways[0] > MAX_AGE_MS / 1000 * 0.85, frames
