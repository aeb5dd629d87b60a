"""Streaming calls get threads of their own, so that open streams never starve unary calls.

gRPC Python's sync server runs every call on one thread of its pool, and a
streaming call (health Watch, ServerReflectionInfo) keeps its thread for as
long as the client holds it open, idle or not. With one shared bound, a few
idle streams would take every thread and leave Predict waiting until its
deadline. The pool is therefore sized for --grpc_max_threads unary calls
plus --grpc_max_streams streams, and a stream past its bound is refused at
once with RESOURCE_EXHAUSTED: however many streams are asked for, at least
--grpc_max_threads threads stay free for unary calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc


class StreamSlots(grpc.ServerInterceptor):
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        # gRPC asks on every call; a registered method's handler is the same each time.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        method = handler_call_details.method  # type: ignore[attr-defined]
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _take(self, context: grpc.ServicerContext) -> None:
        if not self._slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Too many open streaming calls: at most {self._limit} "
                "(--grpc_max_streams)",
            )

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        serializers = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if not handler.response_streaming:  # client streaming: one answer at the end
            behavior = handler.stream_unary

            def answered(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                self._take(context)
                try:
                    return behavior(requests, context)
                finally:
                    self._slots.release()

            return grpc.stream_unary_rpc_method_handler(answered, **serializers)

        def streamed(
            behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
        ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
            # A generator: the slot is taken on the pool thread that runs the stream, and
            # given back however the stream ends (finished, cancelled, failed or closed).
            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                self._take(context)
                try:
                    yield from behavior(request, context)
                finally:
                    self._slots.release()

            return run

        if handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(
                streamed(handler.stream_stream), **serializers
            )
        return grpc.unary_stream_rpc_method_handler(streamed(handler.unary_stream), **serializers)
