"""GET /v1/models/<m>/shadow on the REST port: a model's running figures as JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

from onnx_serving.server.api.rest.app import JSON, Host
from onnx_serving.server.api.rest.http_status import error_body

PATH = re.compile(r"/v1/models/([^/:]+)/shadow")
Report = Callable[[str], "dict[str, Any] | None"]


class ShadowPage:
    """A RestApp mount; ``report(model)`` gives the figures, None for a model not shadowed."""

    def __init__(self, report: Report) -> None:
        self._report = report

    def owns(self, path: str) -> bool:
        return PATH.fullmatch(path) is not None

    async def answer(self, request: Request, host: Host) -> Response:
        match = PATH.fullmatch(request.url.path)
        assert match is not None  # owns() said so
        name = unquote(match.group(1))
        if request.method != "GET":
            return Response(error_body(f"Use GET for the shadow figures of {name}"), 405,
                            media_type=JSON)
        body = self._report(name)
        if body is None:
            return Response(error_body(f"Model {name} is not shadowed"), 404, media_type=JSON)
        return Response(json.dumps(body, indent=1), 200, media_type=JSON)
