"""RestServer: uvicorn on its own thread and event loop, so REST traffic never waits on gRPC's.

Each connection is bounded (idle and read timeouts, header size, how many
are open: ``protocol``). The port is bound here before uvicorn starts, so a busy port fails
``start()`` with a ConfigError as the gRPC port does. Model work runs in a
thread pool of ``threads`` workers (TF's --rest_api_num_threads), never on
the event loop.
"""

from __future__ import annotations

import importlib.util
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import uvicorn

from onnx_serving.server.api.rest.app import Mount, Readiness, RestApp
from onnx_serving.server.api.rest.handlers import RestHandler
from onnx_serving.server.api.rest.protocol import HttpLimits, bounded_protocol
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.flags import ServerOptions
from onnx_serving.server.metrics import Metrics
from onnx_serving.server.serving.core import ServingCore

_HOST: Final = "0.0.0.0"
# uvloop is not built for Windows; asyncio's own loop serves there.
_LOOP: Final = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
_START_TIMEOUT_S: Final = 30.0
_STOP_TIMEOUT_S: Final = 10.0
_GRACE_S: Final = 5


class RestServer:
    def __init__(
        self,
        core: ServingCore,
        *,
        port: int,
        threads: int,
        timeout_ms: int,
        metrics: Metrics,
        metrics_path: str | None = None,
        access_log: bool = False,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        readiness: Readiness | None = None,
        cors: bool = False,
        limits: HttpLimits | None = None,
        mounts: Sequence[Mount] = (),
        inline_cpu: float = 0.0,
    ) -> None:
        """Requests are answered through ``core``; ``metrics`` count them as REST sees them
        and are served at ``metrics_path``. ``ssl_context``: serve HTTPS with it (its
        certificates may change while serving); ``limits``: the flags' bounds on
        connections and bodies (their defaults if None); ``mounts``: other protocols' paths
        (the Open Inference Protocol's /v2/)."""
        self._mounts = mounts
        self._inline_cpu = inline_cpu
        self._limits = limits or HttpLimits.from_options(ServerOptions())
        self._core = core
        self._cors = cors
        self._readiness = readiness
        self._metrics = metrics
        self._metrics_path = metrics_path
        self._access_log = access_log
        self._reuse_port = reuse_port
        self._ssl_context = ssl_context
        self._port = port
        self._threads = threads
        self._timeout_ms = timeout_ms
        self._executor: ThreadPoolExecutor | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Returns once the port listens and the loop serves it."""
        sock = _listen(self._port, self._reuse_port)
        self._executor = ThreadPoolExecutor(max(1, self._threads), thread_name_prefix="rest")
        handler = RestHandler(self._core, max_gzip_bytes=self._limits.max_gzip_bytes)
        app = RestApp(
            handler, self._executor, self._timeout_ms, self._metrics,
            metrics_path=self._metrics_path, access_log=self._access_log,
            readiness=self._readiness, cors=self._cors, mounts=self._mounts,
            inline_cpu=self._inline_cpu,
        )
        context = self._ssl_context
        config = uvicorn.Config(
            app,
            http=bounded_protocol(self._limits),
            # uvicorn annotates an int; it only hands the value to call_later.
            timeout_keep_alive=self._limits.idle_timeout_s,  # type: ignore[arg-type]
            loop=_LOOP,
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=_GRACE_S,
            ssl_context_factory=None if context is None else (lambda _conf, _default: context),
        )
        self._server = uvicorn.Server(config)
        # Run in a thread, uvicorn leaves signal handling to the main thread (the CLI's).
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="rest-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                sock.close()
                self._shutdown_pool()
                raise ConfigError(f"Cannot serve the REST API on {_HOST}:{self._port}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stops taking requests, lets those in flight finish (a few seconds at most)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S)
        self._shutdown_pool()

    def _shutdown_pool(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _listen(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As uvicorn binds: a restart may reuse a port whose old connections linger.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # --num_workers: the kernel spreads connections over the workers
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((_HOST, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot listen on {_HOST}:{port}: {exc.strerror or exc}") from exc
    return sock
