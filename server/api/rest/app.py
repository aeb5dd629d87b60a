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
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Final
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from onnx_serving.server.api.rest.body import MAX_BODY_BYTES, is_gzip, too_large
from onnx_serving.server.api.rest.handlers import Answer, RestHandler
from onnx_serving.server.api.rest.http_status import error_body, http_status
from onnx_serving.server.api.rest.routes import API_LABELS, V1_PATH, Route, parse_route
from onnx_serving.server.errors import Code, FailedPrecondition, ServingError
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
Pages = Callable[[str], "tuple[int, bytes] | None"]
"""A GET path's JSON page (status and body), or None when the path is not one of them."""


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
        pages: Pages | None = None,
    ) -> None:
        """``metrics_path``: where Prometheus scrapes (--monitoring_config_file), if anywhere;
        ``cors``: TF's CORS headers on every API answer (--rest_api_enable_cors_support)."""
        self._readiness = readiness
        self._pages = pages
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
        elif self._pages is not None and scope["method"] == "GET" \
                and (page := self._pages(scope["path"])) is not None:
            response = Response(page[1], page[0], media_type=JSON)
        elif not V1_PATH.fullmatch(path):
            response = Response(_NOT_FOUND, 404, media_type="text/html")
        else:
            try:
                response = await self._answer(Request(scope, receive), path)
            except ClientDisconnect:
                return  # nobody is left to answer
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
            body = await _read_body(request)
            gzipped = is_gzip(request.headers.get("content-encoding", ""))
            asked = route
            deadline = Deadline(self._timeout_ms / 1000 if self._timeout_ms > 0 else None)

            def work() -> Answer:
                return self._handler.handle(asked, body, gzipped, deadline)

            answer = await self._run(work, deadline)
            version = answer.version
            return Response(answer.body.encode("utf-8"), 200, media_type=JSON)
        except ServingError as exc:
            code = exc.code
            return Response(error_body(exc.message), http_status(exc), media_type=JSON)
        except Exception as exc:
            code = Code.INTERNAL
            log.exception("Unexpected error answering %s %s", method, path)
            return Response(error_body(f"internal error: {exc}"), 500, media_type=JSON)
        finally:
            if route is not None:
                self._record(route, version, code, time.perf_counter() - started)

    def _record(self, route: Route, version: int | None, code: Code, seconds: float) -> None:
        """The access line names the version that answered (empty when none did), as
        gRPC's does: a label or no version at all shows which one served it."""
        self._metrics.request(route.name, API_LABELS[route.kind], REST, code, seconds)
        if self._access_log:
            access_log.info("rest %s model=%s version=%s status=%s ms=%.2f",
                            route.kind, route.name, "" if version is None else version,
                            code.name, seconds * 1000)

    async def _run(self, work: Callable[[], Answer], deadline: Deadline) -> Answer:
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
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


def request_path(scope: Scope) -> str:
    """The path as TF Serving matches it: raw, with the query string (its ``uri_path()``)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope["path"])
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _preflight(request: Request) -> Response:
    """CORS preflight, answered as TF Serving answers it."""
    if _CORS_ORIGIN.search(request.headers.get("origin", "")):
        return Response(b"", 200)
    raise FailedPrecondition("Origin header is missing in CORS preflight")
