"""Our Python per Predict, without gRPC's: the interceptor's wrapper, the servicer, the core,
decode, run and encode, looped on one thread under cProfile (or timed bare).

    .venv/bin/python -m bench.handler_profile [--model half_plus_two] [--n 20000] [--profile]
        [--cached_run] [--rest]

The request bytes are parsed and the answer serialized as gRPC would with the servicer's
own (de)serializers; the context is a stand-in with no deadline. What gRPC Python itself
spends per call (its event loop, the hand-off to a pool thread, status) is not here: see
bench/profile_server.py for the live server. ``--rest`` loops TF Serving's REST
``:predict`` instead, from the JSON body (``{"instances": ...}``) to the JSON answer, without
the HTTP server.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc

from bench.suite import payloads
from bench.suite.models import BenchModel, ensure
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2
from onnx_serving.server.api.grpc.observe import ObserveRequests
from onnx_serving.server.api.grpc.prediction_service import PredictionService
from onnx_serving.server.api.rest.handlers import RestHandler
from onnx_serving.server.api.rest.routes import parse_route
from onnx_serving.server.app import App
from onnx_serving.server.flags import parse_flags

PATH = "/tensorflow.serving.PredictionService/Predict"


class _Context:
    """What the handler reads of a grpc.ServicerContext on a successful call."""

    def time_remaining(self) -> None:
        return None

    def add_callback(self, _callback: Any) -> bool:
        return True

    def code(self) -> None:
        return None


class _FirstAnswer:
    """An InferenceSession whose ``run`` answers as its first run did, by outputs asked."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._answers: dict[tuple[str, ...], list[Any]] = {}

    def run(self, outputs: list[str], feeds: Any, options: Any = None) -> list[Any]:
        answer = self._answers.get(tuple(outputs))
        if answer is None:
            answer = self._answers[tuple(outputs)] = self._session.run(outputs, feeds, options)
        return list(answer)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="half_plus_two")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="pstats keys, comma-separated")
    parser.add_argument("--lines", type=int, default=30)
    parser.add_argument("--cached_run", action="store_true",
                        help="answer each run with the first run's outputs, without calling "
                             "ONNX Runtime: the difference is what the run costs in the loop")
    parser.add_argument("--rest", action="store_true",
                        help="TF Serving's REST :predict (row format) instead of gRPC's Predict")
    args = parser.parse_args(argv)
    model = ensure(args.model, log=lambda line: print(line, file=sys.stderr))
    app = App(parse_flags([f"--model_name={model.name}",
                           f"--model_base_path={model.onnx_base}", "--port=1"]))
    app.applier.apply(app._initial_configs)  # loads the model without opening ports
    if args.cached_run:
        with app.manager.acquire(model.name) as (_, loaded):
            for session in loaded._sessions.values():
                session._session = _FirstAnswer(session._session)
    loop = _rest_loop(app, model) if args.rest else _grpc_loop(app, model)
    loop(500)
    started = time.thread_time()  # CPU, not wall: the machine may be shared
    loop(args.n)
    print(f"{(time.thread_time() - started) / args.n * 1e6:.1f} µs of CPU per "
          f"{'REST :predict' if args.rest else 'Predict'} "
          f"({model.name}, bare{', runs answered from a cache' if args.cached_run else ''})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(loop, args.n)
        pstats.Stats(profiler).sort_stats(*args.sort.split(",")).print_stats(args.lines)
    return 0


def _grpc_loop(app: App, model: BenchModel) -> Callable[[int], None]:
    handler = grpc.unary_unary_rpc_method_handler(
        PredictionService(app.serving).Predict,
        request_deserializer=predict_pb2.PredictRequest.FromString,
        response_serializer=predict_pb2.PredictResponse.SerializeToString,
    )
    wrapped = ObserveRequests(app.metrics).wrap(PATH, handler)
    assert wrapped is not None
    behavior, parse = wrapped.unary_unary, wrapped.request_deserializer
    serialize = wrapped.response_serializer
    request, context = payloads.request_bytes(model), _Context()

    def loop(n: int) -> None:
        for _ in range(n):
            serialize(behavior(parse(request), context))

    return loop


def _rest_loop(app: App, model: BenchModel) -> Callable[[int], None]:
    handler = RestHandler(app.serving, max_gzip_bytes=1 << 30)
    route = parse_route("POST", f"/v1/models/{model.name}:predict")
    body = payloads.rest_rows_body(model)

    def loop(n: int) -> None:
        for _ in range(n):
            handler.handle(route, body, False)

    return loop


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
