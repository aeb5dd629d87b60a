"""Request paths → what is asked for, by TF Serving's regexes (http_rest_api_util.cc).

The path is matched as TF Serving matches it: raw (still percent-encoded),
with the query string attached, case-insensitively; only the name and label
are percent-decoded afterwards. The method and sub-resource names are then
compared case-sensitively, so ``:PREDICT`` parses but is still malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

from onnx_serving.server.errors import InvalidArgument

Kind = Literal["status", "metadata", "predict", "classify", "regress"]

# Requests under /v1/ are TF Serving's; any other path is a plain 404.
V1_PATH: Final = re.compile(r"/v1/.*", re.IGNORECASE | re.ASCII | re.DOTALL)

_VERSION_OR_LABEL = r"(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
_POST: Final = re.compile(
    rf"/v1/models/([^/:]+){_VERSION_OR_LABEL}:(classify|regress|predict)",
    re.IGNORECASE | re.ASCII | re.DOTALL,
)
_GET: Final = re.compile(
    rf"/v1/models(?:/([^/:]+))?{_VERSION_OR_LABEL}(?:/(metadata))?",
    re.IGNORECASE | re.ASCII | re.DOTALL,
)
_POST_KINDS: Final[dict[str, Kind]] = {
    "predict": "predict", "classify": "classify", "regress": "regress"
}
_INT64_MAX: Final = 2**63 - 1
# The API label TF Serving's REST latency metric carries: the method as the path names
# it for POSTs, nothing for GETs (its http_server.cc).
API_LABELS: Final[dict[Kind, str]] = {
    "status": "", "metadata": "", "predict": "predict", "classify": "classify",
    "regress": "regress",
}


@dataclass(frozen=True)
class Route:
    kind: Kind
    name: str
    version: int | None = None
    label: str | None = None


def parse_route(method: str, path: str) -> Route:
    """``path`` is the raw request path plus ``?query`` if any (TF's ``uri_path()``)."""
    malformed = InvalidArgument(f"Malformed request: {method} {path}")
    pattern = {"POST": _POST, "GET": _GET}.get(method)
    match = pattern.fullmatch(path) if pattern else None
    if match is None:
        raise malformed
    raw_name, raw_version, raw_label, action = match.groups()
    name = unquote(raw_name) if raw_name else ""
    version = _version(raw_version) if raw_version else None
    label = unquote(raw_label) if raw_label else None
    if method == "POST":
        kind = _POST_KINDS.get(action)
        if kind is None:
            raise malformed
        return Route(kind, name, version, label)
    if not name:
        raise InvalidArgument("Missing model name in request.")
    return Route("metadata" if action == "metadata" else "status", name, version, label)


def _version(raw: str) -> int:
    digits = raw.lstrip("0") or "0"
    # Checked by length first: Python refuses to parse very long digit strings.
    if len(digits) > 19 or int(digits) > _INT64_MAX:
        raise InvalidArgument(f"Failed to convert version: {raw} to numeric.")
    return int(digits)
