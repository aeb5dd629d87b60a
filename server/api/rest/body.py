"""Request bodies: a size bound, and gzip (TF inflates bodies sent with Content-Encoding gzip)."""

from __future__ import annotations

import zlib
from typing import Final

from onnx_serving.server.api.rest.http_status import PayloadTooLarge
from onnx_serving.server.errors import InvalidArgument

# As gRPC's message limit (INT32_MAX), before and after inflating.
MAX_BODY_BYTES: Final = 2**31 - 1
_GZIP_WINDOW: Final = 16 + zlib.MAX_WBITS
_CHUNK: Final = 1 << 24


def too_large(limit: int = MAX_BODY_BYTES) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes")


def is_gzip(content_encoding: str) -> bool:
    """TF inflates when the header merely contains "gzip"."""
    return "gzip" in content_encoding.lower()


def gunzip(data: bytes, limit: int = MAX_BODY_BYTES) -> bytes:
    """Every gzip member of ``data``, inflated; refused past ``limit`` bytes."""
    out = bytearray()
    try:
        while data:
            inflater = zlib.decompressobj(_GZIP_WINDOW)
            chunk = inflater.decompress(data, _CHUNK)
            while True:
                out += chunk
                if len(out) > limit:
                    raise too_large(limit)
                if not inflater.unconsumed_tail:
                    break
                chunk = inflater.decompress(inflater.unconsumed_tail, _CHUNK)
            out += inflater.flush()
            if not inflater.eof:
                raise InvalidArgument("Cannot inflate the gzip request body: it is truncated")
            data = inflater.unused_data
    except zlib.error as exc:
        raise InvalidArgument(f"Cannot inflate the gzip request body: {exc}") from None
    if len(out) > limit:
        raise too_large(limit)
    return bytes(out)
