"""The transport floor: a bare gRPC Python server that answers Predict with fixed bytes.

    .venv/bin/python -m bench.suite.echo_server --port=P --response=FILE [--max_threads=N]

It listens on TF Serving's method path and returns, untouched, the bytes of a
response onnx-serving gave for the same request, so both move the same
payload each way. Its serializers are the identity: no protobuf parsing, no
model, no metrics. Whatever onnx-serving spends beyond this server's round
trip (and beyond the model's own run time) is the server's overhead. It takes
the same thread pool and message limits as onnx-serving's gRPC server.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

SERVICE = "tensorflow.serving.PredictionService"
METHOD = "Predict"
PATH = f"/{SERVICE}/{METHOD}"
MAX_MESSAGE_BYTES = 2**31 - 1  # onnx-serving's (and TF Serving's) limit


def serve(port: int, response: bytes, max_threads: int) -> grpc.Server:
    def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
        return response

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(predict)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads),
        handlers=[handler],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", type=Path, required=True,
                        help="file holding a serialized PredictResponse")
    parser.add_argument("--max_threads", type=int, default=64)
    args = parser.parse_args(argv)
    server = serve(args.port, args.response.read_bytes(), args.max_threads)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
