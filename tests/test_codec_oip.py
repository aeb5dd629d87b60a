"""The Open Inference Protocol's raw tensor bytes and datatype table (codec/oip.py, dtypes.py)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from onnx_serving.codec.dtypes import TF_NAME_BY_OIP, oip_name, oip_numpy
from onnx_serving.codec.oip import RawTensorError, from_raw, to_raw


def test_bytes_are_exact_non_utf8_included() -> None:
    values = np.empty(4, dtype=object)
    values[:] = [b"\xff\xfe", b"", b"\x00" * 3, "caf\u00e9"]
    raw = to_raw(values)
    assert raw[:6] == b"\x02\x00\x00\x00\xff\xfe"  # a 4-byte little-endian length each
    back = from_raw(raw, np.dtype(object), [2, 2])
    assert back.reshape(-1).tolist() == [b"\xff\xfe", b"", b"\x00" * 3, "café".encode()]


@pytest.mark.parametrize("datatype", sorted(TF_NAME_BY_OIP))
def test_every_datatype_both_ways(datatype: str) -> None:
    dtype = oip_numpy(datatype)
    assert dtype is not None
    assert oip_name(dtype) == datatype
    if dtype.kind != "O":
        array = np.arange(6).astype(dtype).reshape(2, 3)
        assert from_raw(to_raw(array), dtype, [2, 3]).tolist() == array.tolist()


def test_names_missing_and_unknown() -> None:
    assert oip_numpy("FLOAT") is None
    assert oip_name(np.dtype(ml_dtypes.float8_e4m3fn)) is None
    assert oip_name(np.dtype("<U3")) == "BYTES"


@pytest.mark.parametrize(("raw", "dtype", "shape", "words"), [
    (b"\0" * 7, np.float32, [2], "holds 7 bytes"),
    (b"\0" * 4, np.float32, [-1], "negative"),
    (b"\x05\0\0\0ab", object, [1], "ends inside BYTES element 0"),
    (b"\0\0\0\0\0", object, [1], "after its 1 BYTES"),
    (b"\0" * 8, object, [10**12], "too few"),
])
def test_refuses_what_does_not_fit(raw: bytes, dtype: type, shape: list[int], words: str) -> None:
    with pytest.raises(RawTensorError, match=words):
        from_raw(raw, np.dtype(dtype), shape)
