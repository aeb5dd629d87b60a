"""Handlers wrapped once, as services register, in place of server interceptors.

gRPC Python runs a server's interceptors in Python on every call, before it finds
the method, however little they do. Two pass-through interceptors on a bare echo
server cost about 60 µs of CPU per call at 16 clients (0.26 -> 0.33 ms, a loaded
2-core machine, docs/performance.md), more than our whole Predict handler's Python.
The request metrics, access log (api/grpc/observe.py) and stream slots
(api/grpc/streams.py) wrap each method's handler once instead: services register
through a ``WrappingServer``, which hands the real server wrapped handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc

# A method's full path and its handler -> the handler to serve it with (or the same).
Wrap = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


def _chain(wraps: Sequence[Wrap]) -> Wrap:
    """The first wrap outermost, as the first of a server's interceptors is."""
    def wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for one in reversed(wraps):
            handler = one(method, handler)
        return handler

    return wrap


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler's answers, wrapped once per method (gRPC asks on every call)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class WrappingServer(grpc.Server):
    """What services register on (``add_*Servicer_to_server``): the real server, with every
    handler wrapped by ``wraps``."""

    def __init__(self, server: grpc.Server, wraps: Sequence[Wrap]) -> None:
        self._server = server
        self._wrap = _chain(wraps)

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[Any]) -> None:
        self._server.add_generic_rpc_handlers(
            [_WrappedGeneric(handler, self._wrap) for handler in generic_rpc_handlers]
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(service_name, {
            name: self._wrap(f"/{service_name}/{name}", handler)
            for name, handler in method_handlers.items()
        })

    # Registration is all this stands for: the rest is the real server's.
    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float | None) -> Any:
        return self._server.stop(grace)
