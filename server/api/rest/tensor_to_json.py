"""numpy tensors → JSON text, written as TF Serving writes tensors (util/json_tensor.cc).

Floats follow TF's WriteDecimal: "%.6g" when that reads back as the same
value, otherwise max_digits10 digits ("%.9g" for float32, "%.17g" for
float64); ".0" is added to whole numbers printed without a point or
exponent; NaN and infinities are written as the bare tokens NaN, Infinity
and -Infinity. A few values are written one by one; for more, which format
each element needs is decided with numpy for the whole tensor, the most
common format is applied to every element in one C-level map and the few
others are patched in. Brackets are laid out by joining rows, or with index
arithmetic when rows are short.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from math import prod
from typing import Final

import numpy as np

BYTES_SUFFIX: Final = "_bytes"
# 10**k is an exact double for k <= 22, so scaling by it rounds once.
_EXACT_POWERS: Final = 22
# Rows at least this long are joined row by row; shorter ones are laid out with numpy.
_LONG_ROWS: Final = 8
# Up to this many floats are written one by one (1-2 µs each): numpy's whole-tensor
# machinery costs 110-170 µs however few the values, a ranker's single score included.
# At 128 values the two cost about the same; from a few hundred on, numpy is cheaper.
_FEW_FLOATS: Final = 128
_FLOAT32: Final = struct.Struct("<f")


def is_bytes_alias(alias: str, array: np.ndarray) -> bool:
    """TF writes DT_STRING outputs named ``*_bytes`` as {"b64": ...} (IsNamedTensorBytes)."""
    return alias.endswith(BYTES_SUFFIX) and (array.dtype == object or array.dtype.kind in "SU")


def tensor_json(array: np.ndarray, as_bytes: bool = False) -> str:
    """The whole tensor as nested JSON arrays (a bare value when 0-d)."""
    if array.size == 0:
        return empty_json(array.shape)
    texts = element_texts(array, as_bytes)
    if array.ndim == 0:
        return texts[0]
    if all(dim == 1 for dim in array.shape[1:]):
        # [n], [n, 1], [n, 1, 1]...: every element sits in the same brackets.
        depth = array.ndim - 1
        separator = "]" * depth + "," + "[" * depth
        return "[" + "[" * depth + separator.join(texts) + "]" * depth + "]"
    if array.shape[-1] >= _LONG_ROWS:
        return _join_rows(texts, array.shape)
    before, after = brackets(array.shape, 1)
    return interleave(before, as_objects(texts), after)


def _join_rows(texts: list[str], shape: Sequence[int]) -> str:
    """Nested joins, innermost first: one join per row, few rows when rows are long."""
    for dim in reversed(shape[1:]):
        texts = ["[" + ",".join(texts[i:i + dim]) + "]" for i in range(0, len(texts), dim)]
    return "[" + ",".join(texts) + "]"


def element_texts(array: np.ndarray, as_bytes: bool = False) -> list[str]:
    """One JSON text per element, flat in C order."""
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == object or flat.dtype.kind in "SU":
        return _string_texts(flat.tolist(), as_bytes)
    if flat.dtype == np.bool_:
        return np.array(["false", "true"], dtype=object)[flat.view(np.uint8)].tolist()
    if flat.dtype.kind in "iu":
        return list(map(str, flat.tolist()))
    return _float_texts(flat)


def as_objects(texts: Iterable[str]) -> np.ndarray:
    items = texts if isinstance(texts, list) else list(texts)
    return np.fromiter(items, dtype=object, count=len(items))


def _string_texts(values: list[str | bytes], as_bytes: bool) -> list[str]:
    if as_bytes:
        return ['{"b64": "' + base64.b64encode(_utf8(v)).decode("ascii") + '"}' for v in values]
    return [
        encode_basestring(v if isinstance(v, str) else v.decode("utf-8", "replace"))
        for v in values
    ]


def _utf8(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _float_texts(flat: np.ndarray) -> list[str]:
    values = flat.astype(np.float64)
    # half, bfloat16, float8 (which TF cannot write at all): six digits always read back.
    narrow = flat.dtype.itemsize <= 2
    long_format, long_limit = ("%.17g", 1e17) if flat.dtype == np.float64 else ("%.9g", 1e9)
    if values.size <= _FEW_FLOATS:
        return _few_float_texts(values.tolist(), _read_back_test(flat.dtype, narrow),
                                long_format)
    finite = np.isfinite(values)
    short = finite if narrow else finite & _six_digits_suffice(values, flat.dtype)
    whole = finite & (values == np.trunc(values))
    magnitude = np.abs(values)
    # Whole numbers that %g prints without an exponent get TF's ".0": exactly what "%.1f" gives.
    plain = whole & np.where(short, magnitude < 1e6, magnitude < long_limit)
    kinds = np.select(
        [plain, short, finite, np.isnan(values), values > 0],
        [_PLAIN, _SHORT, _LONG, _NAN, _INF],
        _NEG_INF,
    )
    writers = ["%.1f", "%.6g", long_format, "NaN", "Infinity", "-Infinity"]
    # Every element is written the majority's way, then the others are patched in.
    counts = np.bincount(kinds, minlength=len(writers))
    majority = int(counts.argmax())
    texts = _write(writers[majority], values)
    for kind in np.flatnonzero(counts).tolist():
        if kind != majority:
            where = np.flatnonzero(kinds == kind)
            for index, text in zip(where.tolist(), _write(writers[kind], values[where]),
                                   strict=True):
                texts[index] = text
    return texts


_PLAIN, _SHORT, _LONG, _NAN, _INF, _NEG_INF = range(6)


def _few_float_texts(
    values: list[float], reads_back: Callable[[float, str], bool], long_format: str
) -> list[str]:
    """TF's WriteDecimal value by value, as json_tensor.cc writes it."""
    texts = []
    isfinite = math.isfinite
    for value in values:
        if not isfinite(value):
            texts.append("NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
            continue
        text = f"{value:.6g}"
        if not reads_back(value, text):
            text = long_format % value
        texts.append(text if "." in text or "e" in text else text + ".0")
    return texts


def _read_back_test(dtype: np.dtype, narrow: bool) -> Callable[[float, str], bool]:
    """Whether ``text`` parses back to ``value`` in ``dtype`` (``value`` is already one)."""
    if narrow:
        return lambda value, text: True
    if dtype == np.float64:
        return lambda value, text: float(text) == value
    if dtype == np.float32:  # struct rounds a double to the nearest float32, as a C cast does
        pack, unpack = _FLOAT32.pack, _FLOAT32.unpack
        return lambda value, text: unpack(pack(float(text)))[0] == value
    return lambda value, text: _reads_back(value, dtype)


# Values formatted in one call: about 3 ms of holding the GIL. A whole large tensor at
# once held it for as long as 0.13 s (300,000 values), every other request waiting.
_CHUNK = 8192


def _write(writer: str, values: np.ndarray) -> list[str]:
    """A printf format for each value, or a fixed token (NaN, Infinity, -Infinity)."""
    if not writer.startswith("%"):
        return [writer] * values.size
    texts: list[str] = []
    for start in range(0, values.size, _CHUNK):
        texts.extend(map(writer.__mod__, values[start:start + _CHUNK].tolist()))
    return texts


def _six_digits_suffice(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Where "%.6g" reads back as the same ``dtype`` value, found without formatting.

    Each value is scaled to six integer digits, rounded, and scaled back by
    one correctly rounded operation on exact operands, which is what parsing
    that decimal does. Near a rounding tie the rounding here may differ from
    printf's, but then no six-digit decimal reads back, so the answer holds.
    """
    magnitude = np.abs(values)
    nonzero = magnitude > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        exponent = np.floor(np.log10(np.where(nonzero, magnitude, 1.0))).astype(np.int64)
        exponent += magnitude >= 10.0 ** (exponent + 1)  # log10 can be one off
        exponent -= magnitude < 10.0**exponent
        shift = 5 - exponent  # value * 10**shift has six integer digits
        up = nonzero & (shift >= 0) & (shift <= _EXACT_POWERS)
        down = nonzero & (shift < 0) & (shift >= -_EXACT_POWERS)
        candidate = np.zeros_like(values)
        scale = 10.0 ** shift[up]
        candidate[up] = np.rint(values[up] * scale) / scale
        scale = 10.0 ** -shift[down]
        candidate[down] = np.rint(values[down] / scale) * scale
        reads_back = candidate.astype(dtype) == values.astype(dtype)
    result = ~nonzero | ((up | down) & reads_back)
    rare = nonzero & ~up & ~down & np.isfinite(values)
    if rare.any():  # below 1e-17 or above 1e27: parse the text itself
        result[rare] = [_reads_back(v, dtype) for v in values[rare].tolist()]
    return result


def _reads_back(value: float, dtype: np.dtype) -> bool:
    return bool(dtype.type(float(f"{value:.6g}")) == dtype.type(value))


def brackets(shape: Sequence[int], count: int) -> tuple[np.ndarray, np.ndarray]:
    """What goes before and after each element of ``count`` tensors of ``shape`` laid end to end.

    Before an element: the brackets that open there. After it: those that
    close, then "," unless it ends its tensor. Both counts follow from the
    element's flat index; ``shape`` must have no zero dimension.
    """
    size = prod(shape)
    index = np.arange(size * count, dtype=np.int64) % size
    opens = np.zeros(index.shape, dtype=np.int64)
    closes = np.zeros(index.shape, dtype=np.int64)
    stride = 1
    for dim in reversed(shape):
        stride *= dim
        opens += index % stride == 0
        closes += (index + 1) % stride == 0
    depth = len(shape)
    before = np.array(["[" * k for k in range(depth + 1)], dtype=object)[opens]
    after = np.array(["]" * k + "," for k in range(depth + 1)], dtype=object)[closes]
    after[index == size - 1] = "]" * depth
    return before, after


def interleave(before: np.ndarray, texts: np.ndarray, after: np.ndarray) -> str:
    parts = np.empty((texts.size, 3), dtype=object)
    parts[:, 0] = before
    parts[:, 1] = texts
    parts[:, 2] = after
    return "".join(parts.reshape(-1).tolist())


def empty_json(shape: Sequence[int]) -> str:
    """A tensor without elements: nested lists down to the first zero dimension."""
    text = ""
    for dim in reversed(shape):
        text = "[" + ",".join([text] * dim) + "]" if dim else "[]"
    return text
