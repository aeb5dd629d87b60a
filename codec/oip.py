"""numpy ⇄ the Open Inference Protocol's raw tensor bytes (KServe v2).

gRPC's ``raw_input_contents``/``raw_output_contents`` and REST's binary data
extension carry the same bytes: the flattened, row-major elements, little-endian,
without padding; BOOL as one byte per element; BYTES as, per element, a 4-byte
little-endian length and then its bytes (Triton's extension_binary_data.md). The
datatype table itself is ``codec.dtypes`` (``oip_numpy``, ``oip_name``).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Final

import numpy as np

from onnx_serving.codec.tensors import MAX_RANK, addressable, element_bytes

_LENGTH: Final = np.dtype("<u4")


class RawTensorError(ValueError):
    """Raw bytes that do not hold a tensor of the datatype and shape given."""


def element_count(shape: Sequence[int], dtype: np.dtype) -> int:
    """How many elements of ``dtype`` ``shape`` holds, once numpy can hold them."""
    text = f"shape [{','.join(map(str, shape))}]"
    if any(d < 0 for d in shape):
        raise RawTensorError(f"{text} has a negative dimension")
    if len(shape) > MAX_RANK:
        raise RawTensorError(f"{text} has {len(shape)} dimensions; at most {MAX_RANK} are served")
    if not addressable(shape, dtype.itemsize):
        raise RawTensorError(f"{text} is past what can be indexed")
    return prod(shape)


def from_raw(data: bytes | memoryview, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """The tensor in ``data``: exactly its bytes, no more, no fewer."""
    count = element_count(shape, dtype)
    if dtype.kind == "O":
        return _strings(memoryview(data), count).reshape(tuple(shape))
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise RawTensorError(
            f"holds {len(data)} bytes, but shape [{','.join(map(str, shape))}] of "
            f"{dtype.name} needs {expected}"
        )
    if dtype.kind == "b":  # any non-zero byte is true, as C++ reads a bool
        return (np.frombuffer(data, np.uint8) != 0).reshape(tuple(shape))
    return np.frombuffer(data, dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(
        tuple(shape)
    )


def to_raw(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OSU":
        parts: list[bytes] = []
        for value in array.reshape(-1):
            element = element_bytes(value)
            parts += (len(element).to_bytes(4, "little"), element)
        return b"".join(parts)
    if array.dtype.kind == "b":
        return np.ascontiguousarray(array, np.uint8).tobytes()
    return np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()


def _strings(data: memoryview, count: int) -> np.ndarray:
    # Each element takes at least its 4-byte length: refuse before allocating for a
    # shape that the bytes cannot hold.
    if count * _LENGTH.itemsize > len(data):
        raise RawTensorError(f"holds {len(data)} bytes, too few for {count} BYTES elements")
    values = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(data):
            raise RawTensorError(f"ends inside the length of BYTES element {i}")
        size = int.from_bytes(data[offset:offset + 4], "little")
        offset += 4
        if offset + size > len(data):
            raise RawTensorError(f"ends inside BYTES element {i}")
        values[i] = bytes(data[offset:offset + size])
        offset += size
    if offset != len(data):
        raise RawTensorError(f"has {len(data) - offset} bytes after its {count} BYTES elements")
    return values
