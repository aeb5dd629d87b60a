"""The one place where errors become gRPC statuses.

Every servicer method is wrapped by ``translate_errors``: a ServingError
answers with its own code, anything else with INTERNAL (and a logged
traceback), so no method can forget the mapping. Messages are cut at 1024
characters as TF Serving cuts them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from onnx_serving.server.errors import Code, ServingError

log = logging.getLogger(__name__)

_MAX_MESSAGE = 1024
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}

T = TypeVar("T")


def grpc_code(code: Code) -> grpc.StatusCode:
    return _GRPC_CODES[int(code)]


def truncate(message: str) -> str:
    if len(message) <= _MAX_MESSAGE:
        return message
    return message[:_MAX_MESSAGE] + "...TRUNCATED"


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except ServingError as exc:
            context.abort(grpc_code(exc.code), truncate(exc.message))
        except Exception as exc:
            log.exception("Unexpected error in %s", method.__qualname__)
            context.abort(grpc.StatusCode.INTERNAL, truncate(f"internal error: {exc}"))

    return handler


def translate_errors(servicer_base: type) -> Callable[[type[T]], type[T]]:
    """Class decorator: wraps every RPC method that ``servicer_base`` declares."""

    def decorate(cls: type[T]) -> type[T]:
        for name, value in vars(servicer_base).items():
            if callable(value) and not name.startswith("_"):
                setattr(cls, name, _wrap(getattr(cls, name)))
        return cls

    return decorate
