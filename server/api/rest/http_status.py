"""The one place where errors become HTTP answers, with TF Serving's code → status table."""

from __future__ import annotations

import json
from typing import Final

from onnx_serving.server.errors import Code, ServingError

# model_servers/http_server.cc ToHTTPStatusCode.
HTTP_STATUS: Final[dict[Code, int]] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


class PayloadTooLarge(ServingError):
    """A request body over our limit. HTTP has a status for it, so it bypasses the table."""

    code = Code.RESOURCE_EXHAUSTED
    http_status = 413


def http_status(error: ServingError) -> int:
    if isinstance(error, PayloadTooLarge):
        return error.http_status
    return HTTP_STATUS.get(error.code, 500)


def error_body(message: str) -> bytes:
    """``{"error": "<message>"}``, as TF Serving's MakeJsonFromStatus writes it."""
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8", "replace")
