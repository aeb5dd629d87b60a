"""The ASGI application: requests are read on the event loop and answered on the thread pool.

Only reading the body happens on the loop; parsing, the model run and
writing the response all run in the pool of ``--rest_api_num_threads``
threads, under ``--rest_api_timeout_in_ms``. A request that runs out of
time is answered DEADLINE_EXCEEDED (504) at once; its run is skipped if it
has not started and stopped (RunOptions.terminate) if it has, and its thread
keeps its slot until then, so the pool's bound holds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import Executor
from typing import Final, Protocol, TypeVar
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from onnx_serving.server.api.call_costs import CallCosts, sized
from onnx_serving.server.api.rest.body import MAX_BODY_BYTES, is_gzip, too_large
from onnx_serving.server.api.rest.handlers import Answer, RestHandler
from onnx_serving.server.api.rest.http_status import error_body, http_status
from onnx_serving.server.api.rest.routes import API_LABELS, V1_PATH, Route, parse_route
from onnx_serving.server.errors import Cancelled, Code, FailedPrecondition, ServingError
from onnx_serving.server.metrics import CONTENT_TYPE, REST, Metrics
from onnx_serving.server.runtime.deadline import Deadline

log = logging.getLogger(__name__)
access_log = logging.getLogger("onnx_serving.access")

JSON: Final = "application/json"
# What TF Serving's HTTP server (libevent) answers for paths outside /v1/.
_NOT_FOUND: Final = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n"
    b"</BODY></HTML>\n"
)
_CORS_ORIGIN: Final = re.compile(r"https?://")
# What TF Serving adds to API answers, errors and preflights included, with CORS on.
CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
# Static probe URLs for Kubernetes, outside TF Serving's /v1/ (docs/kubernetes.md).
LIVE_PATH: Final = "/livez"
READY_PATH: Final = "/readyz"

Readiness = Callable[[], "str | None"]
"""Why the server should get no traffic now, or None when it is ready."""

R = TypeVar("R")


class Host(Protocol):
    """What a mount's requests share with TF Serving's: the RestApp."""

    def run(self, work: Callable[[Deadline], R], key: Hashable | None = None) -> Awaitable[R]:
        """Runs blocking work on the thread pool under --rest_api_timeout_in_ms; work for
        a ``key`` (a model's route) whose calls cost little runs on the event loop."""
        ...

    def record(self, kind: str, model: str, api: str, version: int | str | None, code: Code,
               seconds: float) -> None:
        """Counts a finished request and writes its access log line."""
        ...


class Mount(Protocol):
    """Another protocol's paths on the REST port (api/oip/rest.py). Its requests get
    the same thread pool, timeout, CORS headers, metrics and access log (``Host``)."""

    def owns(self, path: str) -> bool: ...

    async def answer(self, request: Request, host: Host) -> Response: ...


class RestApp:
    def __init__(
        self,
        handler: RestHandler,
        executor: Executor,
        timeout_ms: int,
        metrics: Metrics,
        *,
        metrics_path: str | None = None,
        access_log: bool = False,
        readiness: Readiness | None = None,
        cors: bool = False,
        mounts: Sequence[Mount] = (),
        inline_cpu: float = 0.0,
    ) -> None:
        """``metrics_path``: where Prometheus scrapes (--monitoring_config_file), if anywhere;
        ``cors``: TF's CORS headers on every API answer (--rest_api_enable_cors_support);
        ``inline_cpu``: a model's calls costing at most this much CPU (seconds) run on the
        event loop (``CallCosts``)."""
        self._mounts = mounts
        self._costs = CallCosts(inline_cpu)
        self._readiness = readiness
        self._cors = cors
        self._handler = handler
        self._executor = executor
        self._timeout_ms = timeout_ms
        self._metrics = metrics
        self._metrics_path = metrics_path
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = request_path(scope)
        if self._metrics_path is not None and scope["path"] == self._metrics_path:
            response = Response(self._metrics.render(), 200, media_type=CONTENT_TYPE)
        elif scope["path"] == LIVE_PATH:
            response = Response(b"live\n", 200, media_type="text/plain")
        elif scope["path"] == READY_PATH:
            reason = self._readiness() if self._readiness is not None else None
            response = Response(b"ready\n", 200, media_type="text/plain") if reason is None \
                else Response(f"not ready: {reason}\n".encode(), 503, media_type="text/plain")
        elif not V1_PATH.fullmatch(path) and not any(m.owns(scope["path"]) for m in self._mounts):
            response = Response(_NOT_FOUND, 404, media_type="text/html")
        else:
            mount = next((m for m in self._mounts if m.owns(scope["path"])), None)
            request = Request(scope, receive)
            # A CORS preflight is answered here for every path, a mount's included.
            response = await self._answer(request, path) \
                if mount is None or request.method == "OPTIONS" \
                else await mount.answer(request, self)
            if self._cors:
                response.headers.update(CORS_HEADERS)
        await response(scope, receive, send)

    async def _answer(self, request: Request, path: str) -> Response:
        method = request.method
        started = time.perf_counter()
        route: Route | None = None
        version: int | None = None
        code = Code.OK
        try:
            if method == "OPTIONS":
                return _preflight(request)
            route = parse_route(method, path)
            body = await read_body(request)
            gzipped = is_gzip(request.headers.get("content-encoding", ""))
            asked = route

            def work(deadline: Deadline) -> Answer:
                return self._handler.handle(asked, body, gzipped, deadline)

            answer = await self.run(work, sized((route.kind, route.name), len(body)))
            version = answer.version
            return Response(answer.body.encode("utf-8"), 200, media_type=JSON)
        except Exception as exc:
            response, code = error_response(exc, f"{method} {path}")
            return response
        finally:
            if route is not None:
                self.record(route.kind, route.name, API_LABELS[route.kind], version, code,
                            time.perf_counter() - started)

    def record(self, kind: str, model: str, api: str, version: int | str | None, code: Code,
               seconds: float) -> None:
        """The access line names the version that answered (empty when none did), as
        gRPC's does: a label or no version at all shows which one served it."""
        self._metrics.request(model, api, REST, code, seconds)
        if self._access_log:
            access_log.info("rest %s model=%s version=%s status=%s ms=%.2f",
                            kind, model, "" if version is None else version,
                            code.name, seconds * 1000)

    async def run(self, work: Callable[[Deadline], R], key: Hashable | None = None) -> R:
        deadline = Deadline(self._timeout_ms / 1000 if self._timeout_ms > 0 else None)
        if self._costs.cheap(key):  # no hand-off: it costs more than such a call
            return self._counted(work, deadline, key)
        future = asyncio.get_running_loop().run_in_executor(
            self._executor, self._counted, work, deadline, key)
        if self._timeout_ms <= 0:
            return await future
        try:
            return await asyncio.wait_for(future, self._timeout_ms / 1000)
        except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
            deadline.leave()  # a run still waiting is skipped, one running is stopped
            raise ServingError(
                f"Request did not complete within --rest_api_timeout_in_ms={self._timeout_ms}",
                Code.DEADLINE_EXCEEDED,
            ) from None

    def _counted(self, work: Callable[[Deadline], R], deadline: Deadline,
                 key: Hashable | None) -> R:
        """``work``, its CPU on this thread counted to ``key`` when it succeeds."""
        started = time.thread_time()
        result = work(deadline)
        if key is not None:
            self._costs.spent(key, time.thread_time() - started)
        return result


def error_response(exc: Exception, what: str) -> tuple[Response, Code]:
    """A failed request's answer, ``{"error": ...}`` with the status of ``HTTP_STATUS``,
    and its code; anything but a ServingError is INTERNAL, logged with ``what`` was asked."""
    if isinstance(exc, ServingError):
        return Response(error_body(exc.message), http_status(exc), media_type=JSON), exc.code
    log.error("Unexpected error answering %s", what, exc_info=exc)
    return Response(error_body(f"internal error: {exc}"), 500, media_type=JSON), Code.INTERNAL


def request_path(scope: Scope) -> str:
    """The path as TF Serving matches it: raw, with the query string (its ``uri_path()``)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


async def read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_large()
            chunks.append(chunk)
    except ClientDisconnect:  # counted as cancelled; its answer goes nowhere
        raise Cancelled("The client went away before its request's body arrived") from None
    return b"".join(chunks)


def _preflight(request: Request) -> Response:
    """CORS preflight, answered as TF Serving answers it."""
    if _CORS_ORIGIN.search(request.headers.get("origin", "")):
        return Response(b"", 200)
    raise FailedPrecondition("Origin header is missing in CORS preflight")
