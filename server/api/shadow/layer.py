"""Live shadowing: the PredictionService's four inference calls, wrapped per model.

With --shadow_config_file this layer answers Predict, Classify, Regress and
MultiInference in place of the plain servicer (GetModelMetadata is the servicer's).
Per model, by the config in force when the request arrives:

- ``shadow``: the request's bytes go to the baseline (TF Serving), and the client
  gets its answer's bytes as they came, its errors too (code, message, trailers).
  A sampled share also runs on our servicer on this layer's threads, under the
  config's timeout: ours can neither slow nor fail the client.
- ``candidate``: the client gets our answer; a sampled share also goes to the
  baseline as an asynchronous call under the config's timeout, never waited for.
  While the channel to the baseline is down (TRANSIENT_FAILURE: refused, reset),
  no call is made and the request is dropped as ``baseline_unavailable``: a call
  that fails costs the server's CPU, which its clients share, as much as one that
  answers.
- ``off`` (or not in the file): our servicer alone, as without the flag.

The two answers meet on this layer's threads and are judged there (``judge``).
A sampled request is dropped, and counted, when ``max_in_flight`` comparisons are
under way or their requests and answers hold ``max_in_flight_bytes``; so the extra
memory and queued work stay bounded whatever either side does.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError, Message
from prometheus_client import CollectorRegistry

from onnx_serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)
from onnx_serving.server.api.grpc.prediction_service import PredictionService
from onnx_serving.server.api.shadow.config import (
    Endpoint,
    Mode,
    ShadowConfig,
    read_shadow_config,
)
from onnx_serving.server.api.shadow.figures import Figures, ShadowMetrics
from onnx_serving.server.api.shadow.judge import Refusal, judge
from onnx_serving.server.api.shadow.page import ShadowPage
from onnx_serving.server.api.shadow.records import Disagreements
from onnx_serving.server.api.shadow.switch import next_mode
from onnx_serving.server.errors import ServingError
from onnx_serving.server.request_log.writer import RequestLogOptions

log = logging.getLogger(__name__)

SERVICE = "tensorflow.serving.PredictionService"
THREADS = 2  # run our side in shadow mode, and judge; their work is bounded by max_in_flight
# Headers gRPC sets itself; the client's others (auth, tracing) go on to the baseline.
_OWN_HEADERS = ("grpc-", ":", "user-agent")
# gRPC reports a call without a deadline as one centuries away, too far to pass on.
_NO_DEADLINE = 365 * 24 * 3600.0


@dataclass(frozen=True)
class Api:
    method: str
    request: type[Message]
    response: type[Message]
    log_field: str  # PredictionLog's field for it


APIS = (
    Api("Predict", predict_pb2.PredictRequest, predict_pb2.PredictResponse, "predict_log"),
    Api("Classify", classification_pb2.ClassificationRequest,
        classification_pb2.ClassificationResponse, "classify_log"),
    Api("Regress", regression_pb2.RegressionRequest, regression_pb2.RegressionResponse,
        "regress_log"),
    Api("MultiInference", inference_pb2.MultiInferenceRequest,
        inference_pb2.MultiInferenceResponse, "multi_inference_log"),
)
Ours = Callable[[Message, Any], Message]


class _Refused(Exception):
    """Our servicer aborted: the status it gave."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code, self.details = code, details


class _Capture:
    """The client's context, but an abort is caught here to be compared first."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Refused(code, details)


class _OffPath:
    """The context our servicer gets off the client's path: the shadow timeout only."""

    def __init__(self, timeout: float) -> None:
        self._ends = time.monotonic() + timeout
        self._callbacks: list[Callable[[], None]] = []

    def time_remaining(self) -> float:
        return max(0.0, self._ends - time.monotonic())

    def add_callback(self, callback: Callable[[], None]) -> bool:
        self._callbacks.append(callback)
        return True

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Refused(code, details)

    def finish(self) -> None:
        for callback in self._callbacks:
            callback()


class _Link:
    """A channel to a baseline, and whether gRPC last saw it down."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.channel = endpoint.channel()
        self.down = False
        self.channel.subscribe(self._seen, try_to_connect=True)

    def _seen(self, state: grpc.ChannelConnectivity) -> None:
        self.down = state == grpc.ChannelConnectivity.TRANSIENT_FAILURE


class _Budget:
    """Comparisons under way and the bytes they hold."""

    def __init__(self, count: int, size: int) -> None:
        self._lock = threading.Lock()
        self._max_count, self._max_size = count, size
        self.count = self.size = 0

    def admit(self, size: int) -> str | None:
        """None when admitted, else why not."""
        with self._lock:
            if self.count >= self._max_count:
                return "in_flight"
            if self.size + size > self._max_size:
                return "memory"
            self.count += 1
            self.size += size
            return None

    def grow(self, size: int) -> None:
        with self._lock:
            self.size += size

    def release(self, size: int) -> None:
        with self._lock:
            self.count -= 1
            self.size -= size


@dataclass
class _Route:
    """One shadowed model: its config, the mode in force and its running state."""

    name: str
    config: ShadowConfig
    figures: Figures
    link: _Link
    calls: dict[str, grpc.UnaryUnaryMultiCallable]
    mode: Mode = "off"
    budget: _Budget = field(init=False)
    verdicts: deque[bool] = field(init=False)  # since the mode last changed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.mode = self.config.mode
        self.budget = _Budget(self.config.max_in_flight, self.config.max_in_flight_bytes)
        self.verdicts = deque(maxlen=self.config.switch.after if self.config.switch else 1)

    def sampled(self) -> bool:
        rate = self.config.sampling_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)


Answer: TypeAlias = Message | bytes | Refusal


class _Pair:
    """One sampled request's two answers; the second to arrive sends both to be judged."""

    def __init__(self, route: _Route, api: Api, request: Message, size: int,
                 done: Callable[[_Pair], None]) -> None:
        self.route, self.api, self.request, self.size = route, api, request, size
        self.answers: dict[str, Answer] = {}
        self.dropped = ""
        self._done = done
        self._lock = threading.Lock()

    def set(self, side: str, answer: Answer | str, seconds: float) -> None:
        """``answer`` as a str: the side did not answer in time or at all (a drop reason)."""
        if isinstance(answer, str):
            self.dropped = self.dropped or answer
        else:
            self.route.figures.took(side, seconds)
            size = len(answer) if isinstance(answer, bytes) else \
                answer.ByteSize() if isinstance(answer, Message) else 0
            self.route.budget.grow(size)
            self.size += size
        with self._lock:
            self.answers[side] = answer  # type: ignore[assignment]
            both = len(self.answers) == 2
        if both:
            self._done(self)


class Shadowing:
    """The layer, its config (re-read every ``poll_seconds``) and its threads."""

    def __init__(self, path: Path, poll_seconds: float, registry: CollectorRegistry,
                 log_options: RequestLogOptions) -> None:
        self._path = path
        self._metrics = ShadowMetrics(registry)
        self._figures: dict[str, Figures] = {}
        self._links: dict[Endpoint, _Link] = {}
        self._routes: dict[str, _Route] = {}
        self._bytes = path.read_bytes() if path.exists() else b""
        self.apply(read_shadow_config(path))  # a bad file stops start-up
        self._executor = ThreadPoolExecutor(THREADS, thread_name_prefix="shadow")
        self._disagreements = Disagreements(log_options, lambda model, written: None)
        self._stopped = threading.Event()
        if poll_seconds > 0:
            threading.Thread(target=self._poll, args=(poll_seconds,), name="shadow-config",
                             daemon=True).start()

    # -- config -----------------------------------------------------------------------------

    def apply(self, configs: dict[str, ShadowConfig]) -> None:
        """Swaps the routes at once: each request reads its model's route once, so a
        change never fails one in flight; unchanged models keep their route and mode."""
        routes: dict[str, _Route] = {}
        for name, config in configs.items():
            old = self._routes.get(name)
            if old is not None and old.config == config:
                routes[name] = old
                continue
            link = self._links.get(config.endpoint)
            if link is None:  # old channels stay open for the calls still on them
                link = self._links[config.endpoint] = _Link(config.endpoint)
            calls = {api.method: link.channel.unary_unary(f"/{SERVICE}/{api.method}")
                     for api in APIS}
            figures = self._figures.setdefault(name, Figures(name, self._metrics))
            routes[name] = _Route(name, config, figures, link, calls)
            self._metrics.set_mode(name, config.mode)
            log.info("Shadowing model %s: %s against %s, sampling %g%s", name, config.mode,
                     config.endpoint.address, config.sampling_rate,
                     ", automatic switch on" if config.switch else "")
        for name in self._routes.keys() - routes.keys():
            self._metrics.set_mode(name, "off")
            log.info("Model %s is no longer shadowed", name)
        self._routes = routes

    def _poll(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            try:
                data = self._path.read_bytes()
            except OSError as exc:
                log.error("Cannot re-read shadow config file %s: %s", self._path, exc)
                continue
            if data == self._bytes:
                continue
            self._bytes = data
            try:
                self.apply(read_shadow_config(self._path))
            except ServingError as exc:
                log.error("Shadow config unchanged: %s", exc.message)

    # -- the gRPC layer ---------------------------------------------------------------------

    def install(self, service: PredictionService, server: grpc.Server) -> None:
        """Registers the PredictionService: our four wrapped calls, the servicer's metadata."""
        handlers: dict[str, grpc.RpcMethodHandler] = {
            api.method: grpc.unary_unary_rpc_method_handler(
                self._call(api, getattr(service, api.method)),
                request_deserializer=api.request.FromString,  # bytes back out as they are
            )
            for api in APIS
        }
        handlers["GetModelMetadata"] = grpc.unary_unary_rpc_method_handler(
            service.GetModelMetadata,
            request_deserializer=get_model_metadata_pb2.GetModelMetadataRequest.FromString,
            response_serializer=get_model_metadata_pb2.GetModelMetadataResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)

    def _call(self, api: Api, ours: Ours) -> Callable[[Message, grpc.ServicerContext], bytes]:
        def call(request: Message, context: grpc.ServicerContext) -> bytes:
            route = self._routes.get(_model_name(request))
            if route is None or route.mode == "off":
                return ours(request, context).SerializeToString()
            if route.mode == "shadow":
                return self._shadow(route, api, ours, request, context)
            return self._candidate(route, api, ours, request, context)

        return call

    def _shadow(self, route: _Route, api: Api, ours: Ours, request: Message,
                context: grpc.ServicerContext) -> bytes:
        raw = request.SerializeToString()
        pair = self._admit(route, api, request, len(raw))
        if pair is not None:
            self._run(self._off_path, pair, ours)
        started = time.perf_counter()
        try:
            answer: bytes = route.calls[api.method](
                raw, timeout=_remaining(context), metadata=_forwarded(context)
            )
        except grpc.RpcError as exc:
            if pair is not None:
                pair.set("baseline", _outcome("baseline", exc), time.perf_counter() - started)
            context.set_trailing_metadata(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
            context.abort(exc.code(), exc.details() or "")  # type: ignore[attr-defined]
        if pair is not None:
            pair.set("baseline", answer, time.perf_counter() - started)
        return answer

    def _off_path(self, pair: _Pair, ours: Ours) -> None:
        context = _OffPath(pair.route.config.timeout_ms / 1000)
        started = time.perf_counter()
        try:
            answer: Answer | str = ours(pair.request, context)
        except _Refused as exc:
            answer = _outcome("onnx", exc)
        finally:
            context.finish()
        pair.set("onnx", answer, time.perf_counter() - started)

    def _candidate(self, route: _Route, api: Api, ours: Ours, request: Message,
                   context: grpc.ServicerContext) -> bytes:
        pair = self._admit(route, api, request, request.ByteSize(), route.link.down)
        if pair is not None:
            asked = time.perf_counter()
            future = route.calls[api.method].future(
                request.SerializeToString(), timeout=route.config.timeout_ms / 1000,
                metadata=_forwarded(context),
            )

            def arrived(done: grpc.Future) -> None:
                seconds = time.perf_counter() - asked
                exc = done.exception()
                answer = _outcome("baseline", exc) if isinstance(exc, grpc.RpcError) \
                    else done.result()
                pair.set("baseline", answer, seconds)

            future.add_done_callback(arrived)
        started = time.perf_counter()
        try:
            response = ours(request, _Capture(context))
        except _Refused as exc:
            if pair is not None:
                pair.set("onnx", _outcome("onnx", exc), time.perf_counter() - started)
            context.abort(exc.code, exc.details)
        if pair is not None:
            pair.set("onnx", response, time.perf_counter() - started)
        return response.SerializeToString()

    def _admit(self, route: _Route, api: Api, request: Message, size: int,
               baseline_down: bool = False) -> _Pair | None:
        if not route.sampled():
            return None
        refused = "baseline_unavailable" if baseline_down else route.budget.admit(size)
        if refused is not None:
            route.figures.drop(refused)
            return None
        return _Pair(route, api, request, size, self._submit)

    def _submit(self, pair: _Pair) -> None:
        if not self._run(self._judge, pair):
            pair.route.budget.release(pair.size)

    def _run(self, work: Callable[..., None], *args: Any) -> bool:
        """On this layer's threads; an error there is logged, never the client's. False
        once shut down."""
        try:
            future = self._executor.submit(work, *args)
        except RuntimeError:
            return False
        future.add_done_callback(_log_failure)
        return True

    # -- judging ----------------------------------------------------------------------------

    def _judge(self, pair: _Pair) -> None:
        route, api = pair.route, pair.api
        try:
            if pair.dropped:
                route.figures.drop(pair.dropped)
                return
            answers = {side: _message(api, answer) for side, answer in pair.answers.items()}
            config = route.config
            verdict = judge(answers["baseline"], answers["onnx"], config.atol, config.rtol,
                            config.top_k)
            route.figures.add(_version(answers["onnx"]), verdict)
            if not verdict.agreed and config.log_prefix:
                self._disagreements.put(route.name, config.log_prefix, api.log_field,
                                        config.sampling_rate, pair.request, answers)
            self._switch(route, verdict.agreed)
        finally:
            route.budget.release(pair.size)

    def _switch(self, route: _Route, agreed: bool) -> None:
        rule = route.config.switch
        if rule is None:
            return
        with route.lock:
            route.verdicts.append(agreed)
            moved = next_mode(route.mode, rule, route.verdicts, route.figures.p99("onnx"),
                              route.figures.p99("baseline"))
            if moved is None:
                return
            route.mode = moved[0]
            route.verdicts.clear()
        self._metrics.set_mode(route.name, moved[0])
        log.warning("Shadowing model %s: switched to %s by the automatic rule: %s",
                    route.name, moved[0], moved[1])

    # -- the REST page ----------------------------------------------------------------------

    @property
    def page(self) -> ShadowPage:
        """The REST port's /v1/models/<m>/shadow, a mount of the RestApp."""
        return ShadowPage(self.report)

    def report(self, name: str) -> dict[str, Any] | None:
        """A model's running figures, None when it is not shadowed."""
        route = self._routes.get(name)
        if route is None:
            return None
        config = route.config
        body = {
            "model": name,
            "mode": route.mode,
            "configured_mode": config.mode,
            "baseline": config.endpoint.address,
            "sampling_rate": config.sampling_rate,
            "timeout_ms": config.timeout_ms,
            "in_flight": {"requests": route.budget.count, "bytes": route.budget.size},
            "switch": None if config.switch is None else vars(config.switch),
            **route.figures.to_json(),
        }
        return body

    def close(self) -> None:
        """After the gRPC server stopped: waits for what is being judged, writes the log."""
        self._stopped.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._disagreements.close()
        for link in self._links.values():
            link.channel.close()


def _model_name(request: Any) -> str:
    spec = getattr(request, "model_spec", None)
    if spec is not None:
        return str(spec.name)
    tasks = request.tasks  # MultiInference names its model per task, the first one counts
    return str(tasks[0].model_spec.name) if tasks else ""


def _remaining(context: grpc.ServicerContext) -> float | None:
    """The client's deadline, passed on to the baseline (None: it set none)."""
    remaining = context.time_remaining()
    return remaining if remaining < _NO_DEADLINE else None


def _forwarded(context: grpc.ServicerContext) -> Sequence[tuple[str, str | bytes]]:
    return tuple((k, v) for k, v in context.invocation_metadata() or ()
                 if not k.startswith(_OWN_HEADERS))


def _outcome(side: str, exc: grpc.RpcError | _Refused) -> Refusal | str:
    """A status as compared, or, for a side that ran out of time or was not reached,
    the reason the request is dropped from the comparison."""
    code = exc.code if isinstance(exc, _Refused) else exc.code()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{side}_timeout"
    if code == grpc.StatusCode.UNAVAILABLE and side == "baseline":
        return "baseline_unavailable"
    details = exc.details if isinstance(exc, _Refused) else exc.details()  # type: ignore[attr-defined]
    return Refusal(code.name, details or "")


def _message(api: Api, answer: Answer) -> Message | Refusal:
    if not isinstance(answer, bytes):
        return answer
    try:
        return api.response.FromString(answer)
    except DecodeError as exc:
        return Refusal("UNDECODABLE", str(exc))


def _log_failure(future: Future[None]) -> None:
    exc = future.exception() if not future.cancelled() else None
    if exc is not None:
        log.error("Shadowing: a comparison failed", exc_info=exc)


def _version(answer: Message | Refusal) -> str:
    """The version of ours that answered ("" for a refusal), as metrics label it."""
    results = getattr(answer, "results", None)  # MultiInference: each task's
    spec = results[0].model_spec if results else getattr(answer, "model_spec", None)
    return str(spec.version.value) if spec is not None and spec.HasField("version") else ""
