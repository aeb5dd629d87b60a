"""The Open Inference Protocol's REST paths (/v2/...) on the REST port, beside TF Serving's /v1/.

A mount of the REST app (``api/rest/app.py``): requests run on its thread pool
under --rest_api_timeout_in_ms, errors are ``{"error": "..."}`` with the status
of the one HTTP table (``api/rest/http_status.py``), and they are counted and
access-logged as TF Serving's are.

Tensors are JSON (``data``, flat or nested, row-major) or, with the binary data
extension (Triton's extension_binary_data.md), raw bytes after a JSON header of
``Inference-Header-Content-Length`` bytes, an input's size given by its
``binary_data_size`` parameter. Outputs are binary where the request asks
(``binary_data`` per output, ``binary_data_output`` for all). BYTES in JSON are
strings: ONNX Runtime's string tensors hold text, so they are always UTF-8.

A body sent with ``Content-Encoding: gzip`` (tritonclient's
``request_compression_algorithm="gzip"``) is inflated first, as /v1 inflates it
(``api/rest/body.py``, bounded by --rest_api_max_gzip_bytes);
``Inference-Header-Content-Length`` counts the inflated header, as Triton reads it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, Final

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from onnx_serving.codec.json_body import CollectorPaused, fast_object
from onnx_serving.codec.oip import RawTensorError, element_count, from_raw, to_raw
from onnx_serving.codec.tensors import MAX_RANK, element_bytes
from onnx_serving.server.api.call_costs import sized
from onnx_serving.server.api.oip.inference import (
    EXTENSIONS,
    SERVER_NAME,
    Inference,
    InferOutput,
    InputData,
    server_version,
)
from onnx_serving.server.api.rest.app import JSON, Host, error_response, read_body
from onnx_serving.server.api.rest.body import gunzip, is_gzip
from onnx_serving.server.errors import Code, InvalidArgument, NotFound
from onnx_serving.server.metrics import REST
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.serving.predict import Served

HEADER_LENGTH: Final = "inference-header-content-length"
_MODEL: Final = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?")
_OCTETS: Final = "application/octet-stream"


class OipRest:
    """Mounted on the REST app by App; answers every path under /v2."""

    def __init__(self, inference: Inference, *, max_gzip_bytes: int) -> None:
        """``max_gzip_bytes``: what a gzip body may inflate to (--rest_api_max_gzip_bytes)."""
        self._inference = inference
        self._max_gzip_bytes = max_gzip_bytes

    def owns(self, path: str) -> bool:
        return path == "/v2" or path.startswith("/v2/")

    async def answer(self, request: Request, host: Host) -> Response:
        path, method = request.url.path, request.method
        started = time.perf_counter()
        model = version = None
        kind, code = "", Code.OK
        answered: list[int] = []
        try:
            if method == "GET" and path == "/v2":
                return _json({"name": SERVER_NAME, "version": server_version(),
                              "extensions": list(EXTENSIONS)})
            if method == "GET" and path == "/v2/health/live":
                return _json({"live": True})
            if method == "GET" and path == "/v2/health/ready":
                ready = await host.run(lambda _: self._inference.server_ready())
                return _json({"ready": ready}, 200 if ready else 400)
            match = _MODEL.fullmatch(path)
            if match is None:
                raise NotFound(f"No Open Inference Protocol endpoint at {path}")
            model, version, action = match.group(1), match.group(2) or "", match.group(3)
            kind = action or "metadata"
            name, asked = model, version  # as str, for the closures below
            if (method, action) == ("POST", "infer"):
                body = await read_body(request)
                header = request.headers.get(HEADER_LENGTH)
                gzipped = is_gzip(request.headers.get("content-encoding", ""))

                def infer(deadline: Deadline) -> Response:
                    inflated = gunzip(body, self._max_gzip_bytes) if gzipped else body
                    return self._infer(name, asked, inflated, header, deadline, answered)

                return await host.run(infer, sized((kind, name), len(body)))
            if method != "GET" or action == "infer":
                raise InvalidArgument(f"Malformed request: {method} {path}")
            if action == "ready":
                ready = await host.run(lambda _: self._inference.model_ready(name, asked))
                return _json({"name": model, "ready": ready}, 200 if ready else 400)
            metadata = await host.run(lambda _: self._inference.model_metadata(name, asked))
            return _json(asdict(metadata))
        except Exception as exc:
            response, code = error_response(exc, f"{method} {path}")
            return response
        finally:
            if model is not None:
                # As TF's REST counts its GETs under no API; the version that answered.
                host.record(kind, model, kind if kind == "infer" else "",
                            answered[0] if answered else version or None, code,
                            time.perf_counter() - started)

    def _infer(self, name: str, version: str, body: bytes, header: str | None,
               deadline: Deadline, answered: list[int]) -> Response:
        document, binary = _split(body, header)
        inputs = _inputs(document, binary)
        binary_default = _flag(document.get("parameters"), "binary_data_output")
        requested = document.get("outputs") or []
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
        ):
            raise InvalidArgument("'outputs' must be a list of objects with a 'name'")
        as_binary = {o["name"]: _flag(o.get("parameters"), "binary_data", binary_default)
                     for o in requested}

        def encode(served: Served, outputs: list[InferOutput]) -> Response:
            answered.append(served.version)
            head: dict[str, Any] = {"model_name": served.name,
                                    "model_version": str(served.version)}
            if "id" in document:
                head["id"] = document["id"]
            head["outputs"] = described = []
            tail: list[bytes] = []
            for output in outputs:
                entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype,
                                         "shape": output.shape}
                if as_binary.get(output.name, binary_default):
                    raw = to_raw(output.array)
                    entry["parameters"] = {"binary_data_size": len(raw)}
                    tail.append(raw)
                else:
                    entry["data"] = _json_data(output)
                described.append(entry)
            text = json.dumps(head).encode()
            if not tail:
                return Response(text, 200, media_type=JSON)
            return Response(b"".join([text, *tail]), 200, media_type=_OCTETS,
                            headers={HEADER_LENGTH: str(len(text))})

        return self._inference.infer(
            name, version, inputs, [o["name"] for o in requested], encode,
            entrypoint=REST, deadline=deadline,
        )


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document).encode(), status, media_type=JSON)


def _split(body: bytes, header: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON header and the binary data after it."""
    size = len(body)
    if header is not None:
        digits = header.strip()
        if not (digits.isascii() and digits.isdigit()) or int(digits) > len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length {header!r} is not a length within the "
                f"{len(body)}-byte body"
            )
        size = int(digits)
    head = body[:size]
    document: Any = fast_object(head)
    if document is None:
        try:
            with CollectorPaused(len(head)):
                document = json.loads(head)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"The request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidArgument("The request body is not valid JSON: it is nested too "
                                  "deeply") from None
    if not isinstance(document, dict):
        raise InvalidArgument("The request body must be a JSON object")
    return document, memoryview(body)[size:]


def _flag(parameters: Any, key: str, default: bool = False) -> bool:
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise InvalidArgument("'parameters' must be a JSON object")
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"parameter '{key}' must be true or false")
    return value


def _inputs(document: Mapping[str, Any], binary: memoryview) -> list[InputData]:
    given = document.get("inputs")
    if not isinstance(given, list):
        raise InvalidArgument("The request has no 'inputs' list")
    inputs: list[InputData] = []
    offset = 0
    for tensor in given:
        if not isinstance(tensor, dict):
            raise InvalidArgument("Each input must be a JSON object")
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise InvalidArgument("Each input needs a 'name' and a 'datatype'")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise InvalidArgument(f"input '{name}' needs a 'shape' of integers")
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidArgument(
                    f"input '{name}': binary_data_size {size!r} runs past the binary data"
                )
            inputs.append(_raw_input(name, datatype, shape, binary[offset:offset + size]))
            offset += size
        elif "data" in tensor:
            inputs.append(_json_input(name, datatype, shape, tensor["data"]))
        else:
            raise InvalidArgument(f"input '{name}' has neither 'data' nor binary_data_size")
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} bytes of binary data are named by no input"
        )
    return inputs


def _raw_input(name: str, datatype: str, shape: list[int], data: memoryview) -> InputData:
    def decode(dtype: np.dtype) -> np.ndarray:
        try:
            return from_raw(data, dtype, shape)
        except RawTensorError as exc:
            raise InvalidArgument(f"input '{name}': binary data {exc}") from None

    return InputData(name, datatype, shape, decode)


def _json_input(name: str, datatype: str, shape: list[int], data: Any) -> InputData:
    def decode(dtype: np.dtype) -> np.ndarray:
        try:
            count = element_count(shape, dtype)
        except RawTensorError as exc:
            raise InvalidArgument(f"input '{name}': {exc}") from None
        values = _flatten(name, data)
        if len(values) != count:
            raise InvalidArgument(
                f"input '{name}' has {len(values)} elements, but shape "
                f"[{','.join(map(str, shape))}] needs {count}"
            )
        return _typed(name, datatype, values, dtype).reshape(shape)

    return InputData(name, datatype, shape, decode)


def _flatten(name: str, data: Any) -> list[Any]:
    """``data`` flat or nested (row-major), as its elements; nested no deeper than a
    tensor's rank may be."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    lists = [iter(data)]  # the lists being read, outermost first
    while lists:
        for item in lists[-1]:
            if isinstance(item, list):
                if len(lists) == MAX_RANK:
                    raise InvalidArgument(
                        f"input '{name}' has data nested deeper than {MAX_RANK} lists")
                lists.append(iter(item))
                break
            flat.append(item)
        else:
            lists.pop()
    return flat


# The JSON values each kind of datatype takes: booleans, integers, numbers, strings.
_JSON_KINDS: Final = {"b": (bool,), "i": (int,), "u": (int,), "f": (int, float)}


def _typed(name: str, datatype: str, values: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    """``dtype``: the model's, which ``datatype`` was checked to be."""
    wrong = InvalidArgument(f"input '{name}' has data that is not {datatype}")
    if dtype.kind == "O":
        if not all(isinstance(v, str) for v in values):
            raise wrong
        array = np.empty(len(values), dtype=object)
        array[:] = [v.encode("utf-8") for v in values]
        return array
    kind = "f" if dtype.kind == "V" else dtype.kind  # ml_dtypes' bfloat16 is kind "V"
    kinds = _JSON_KINDS[kind]
    for value in values:
        # bool is an int to Python, not a number to JSON
        if not isinstance(value, kinds) or (isinstance(value, bool) and kind != "b"):
            raise wrong
    if kind in "iu":
        info = np.iinfo(dtype)
        if any(v < info.min or v > info.max for v in values):
            raise InvalidArgument(f"input '{name}' has values out of range for {datatype}")
    try:
        return np.array(values, dtype=np.float64 if kind == "f" else dtype).astype(dtype)
    except OverflowError:  # an integer past a double's range
        raise InvalidArgument(f"input '{name}' has values out of range for {datatype}") from None


def _json_data(output: InferOutput) -> list[Any]:
    """The output's elements as JSON values, flat."""
    flat = output.array.reshape(-1)
    if output.datatype == "BYTES":
        return [element_bytes(v).decode("utf-8") for v in flat]
    if output.datatype in ("FP16", "BF16"):
        flat = flat.astype(np.float32)
    values: list[Any] = flat.tolist()
    return values
