"""The transport floor: a bare gRPC Python server that answers Predict with fixed bytes.

    .venv/bin/python -m bench.suite.echo_server --port=P --response=FILE [--max_threads=N]
        [--parse] [--run=MODEL.onnx --request=FILE] [--lane]

It listens on TF Serving's method path and returns, untouched, the bytes of a
response onnx-serving gave for the same request, so both move the same
payload each way. Its serializers are the identity: no protobuf parsing, no
model, no metrics. Whatever onnx-serving spends beyond this server's round
trip (and beyond the model's own run time) is the server's overhead. It takes
the same thread pool and message limits as onnx-serving's gRPC server.

Two steps up from the bare floor (bench/floor.py climbs them): ``--parse`` reads
each request and writes each answer with protobuf's PredictRequest and
PredictResponse, as any servicer does; ``--run`` also runs the model on every
request, on the tensors of the request in FILE decoded once at start (a
single-input model), with the threads the server chooses by default
(server/runtime/threads.py). What onnx-serving spends beyond the top step is its own Python:
lookups, checks, decode, encode, metrics, deadlines.

``--lane`` answers on onnx-serving's unary lane (server/api/grpc/unary.py) instead of
gRPC Python's server loop, each call on the thread that receives it: the floor of the
transport onnx-serving uses.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import onnxruntime as ort

from onnx_serving.codec.tensors import make_ndarray
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2
from onnx_serving.server.api.grpc.unary import UnaryServer
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.threads import SPINNING, choose

SERVICE = "tensorflow.serving.PredictionService"
METHOD = "Predict"
PATH = f"/{SERVICE}/{METHOD}"
MAX_MESSAGE_BYTES = 2**31 - 1  # onnx-serving's (and TF Serving's) limit


def serve(
    port: int, response: bytes, max_threads: int, *, parse: bool = False,
    run: Callable[[], Any] | None = None, lane: bool = False,
) -> grpc.Server:
    if parse or run is not None:
        message = predict_pb2.PredictResponse.FromString(response)

        def answer(request: Any, context: grpc.ServicerContext) -> Any:
            if run is not None:
                run()
            return message

        method = grpc.unary_unary_rpc_method_handler(
            answer,
            request_deserializer=predict_pb2.PredictRequest.FromString,
            response_serializer=predict_pb2.PredictResponse.SerializeToString,
        )
    else:
        def predict(request: bytes, context: grpc.ServicerContext) -> bytes:
            return response

        method = grpc.unary_unary_rpc_method_handler(predict)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_threads),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    if lane:  # every call on the poller: the one key it has, at no cost
        server = UnaryServer(server, workers=max_threads, observe=lambda _, given: given,
                             inline=lambda _: lambda _request: "", inline_cpu=float("inf"))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE,
                                                                          {METHOD: method})])
    server.add_registered_method_handlers(SERVICE, {METHOD: method})
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def model_run(model: Path, request: bytes) -> Callable[[], Any]:
    """One run of ``model`` on the request's tensor, as a call."""
    threads = choose(RuntimeConfig())  # the server's defaults, as onnx-serving runs it
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads.intra_op_threads
    options.inter_op_num_threads = threads.inter_op_threads
    options.add_session_config_entry(SPINNING, "1" if threads.spinning else "0")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    (tensor,) = predict_pb2.PredictRequest.FromString(request).inputs.values()
    feeds = {session.get_inputs()[0].name: make_ndarray(tensor)}
    return lambda: session.run(None, feeds)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", type=Path, required=True,
                        help="file holding a serialized PredictResponse")
    parser.add_argument("--max_threads", type=int, default=64)
    parser.add_argument("--parse", action="store_true",
                        help="read requests and write answers with protobuf's messages")
    parser.add_argument("--run", type=Path, help="an .onnx file to run on every request")
    parser.add_argument("--request", type=Path,
                        help="a serialized PredictRequest: --run's input")
    parser.add_argument("--lane", action="store_true",
                        help="answer on onnx-serving's unary lane, not gRPC Python's loop")
    args = parser.parse_args(argv)
    if args.run and not args.request:
        parser.error("--run needs --request")
    run = model_run(args.run, args.request.read_bytes()) if args.run else None
    server = serve(args.port, args.response.read_bytes(), args.max_threads,
                   parse=args.parse, run=run, lane=args.lane)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
