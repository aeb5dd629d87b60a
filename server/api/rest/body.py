"""Request bodies: a size bound, and gzip (TF inflates bodies sent with Content-Encoding gzip).

An inflated body is bounded by --rest_api_max_gzip_bytes, TF Serving's
100 MiB by default (net_http/compression/gzip_zlib.h kMaxUncompressedBytes),
and inflating stops as soon as it passes it: a small bomb costs no memory.
"""

from __future__ import annotations

import zlib
from typing import Final

from onnx_serving.server.api.rest.http_status import PayloadTooLarge
from onnx_serving.server.errors import InvalidArgument

# As gRPC's message limit (INT32_MAX), for a body as it arrives.
MAX_BODY_BYTES: Final = 2**31 - 1
_GZIP_WINDOW: Final = 16 + zlib.MAX_WBITS
_CHUNK: Final = 1 << 24


def too_large() -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than the limit of {MAX_BODY_BYTES} bytes")


def is_gzip(content_encoding: str) -> bool:
    """TF inflates when the header merely contains "gzip"."""
    return "gzip" in content_encoding.lower()


def gunzip(data: bytes, limit: int) -> bytes:
    """Every gzip member of ``data``, inflated; refused past ``limit`` bytes."""
    out = bytearray()
    step = min(_CHUNK, limit + 1)  # never more than one step past the limit in memory
    try:
        while data:
            inflater = zlib.decompressobj(_GZIP_WINDOW)
            chunk = inflater.decompress(data, step)
            while True:
                out += chunk
                if len(out) > limit:
                    raise _inflates_too_large(limit)
                if not inflater.unconsumed_tail:
                    break
                chunk = inflater.decompress(inflater.unconsumed_tail, step)
            out += inflater.flush()
            if not inflater.eof:
                raise InvalidArgument("Cannot inflate the gzip request body: it is truncated")
            data = inflater.unused_data
    except zlib.error as exc:
        raise InvalidArgument(f"Cannot inflate the gzip request body: {exc}") from None
    if len(out) > limit:
        raise _inflates_too_large(limit)
    return bytes(out)


def _inflates_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"Request body inflates to more than the limit of {limit} bytes "
        "(--rest_api_max_gzip_bytes)"
    )
