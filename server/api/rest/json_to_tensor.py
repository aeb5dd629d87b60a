"""JSON values → numpy tensors of a signature's dtypes, by TF Serving's rules (util/json_tensor.cc).

A value's shape is read from the first element at each level; every list
must then have that level's size, every leaf must sit at the deepest level,
and every leaf must suit the dtype: numbers for floats, integers in range
for integer types, true/false for bools, strings or ``{"b64": ...}`` for
DT_STRING. A fast path checks a whole tensor with C-level iteration and
numpy; only when it fails does the element-by-element walk run, and that walk
raises TF Serving's message for the first offending value.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import chain
from typing import Any

import numpy as np

from onnx_serving.codec.dtypes import tf_name
from onnx_serving.server.api.rest.rapidjson_compat import NUMBER_TOO_BIG, debug_string, type_name
from onnx_serving.server.errors import InvalidArgument, Unimplemented

B64_KEY = "b64"
Shape = tuple[int, ...]
# numpy's limit on dimensions (NPY_MAXDIMS); deeper JSON is refused before any recursion.
MAX_RANK = 64


@dataclass(frozen=True)
class _Rule:
    """What one dtype accepts from JSON."""

    dtype: np.dtype
    name: str  # TensorFlow's DataTypeString ("float", "int32"), as its messages say
    leaf_types: frozenset[type]  # the fast path's test
    accepts: Callable[[Any], bool]  # the exact walk's test


@cache
def rule_for(dtype: np.dtype) -> _Rule:
    name = tf_name(dtype).removeprefix("DT_").lower()
    if dtype.kind == "O":
        return _Rule(dtype, name, frozenset({str}), lambda v: isinstance(v, str))
    if dtype == np.bool_:
        return _Rule(dtype, name, frozenset({bool}), lambda v: isinstance(v, bool))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = int(info.min), int(info.max)
        return _Rule(dtype, name, frozenset({int}),
                     lambda v: type(v) is int and low <= v <= high)
    if dtype.kind == "f" or dtype.type.__module__.startswith("ml_dtypes"):
        return _Rule(dtype, name, frozenset({int, float}), lambda v: type(v) in (int, float))
    return _Rule(dtype, name, frozenset(), lambda v: False)


def dense_shape(value: Any) -> Shape:
    """The shape TF reads off a value: each level's size, following first elements."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def to_tensor(value: Any, dtype: np.dtype) -> np.ndarray:
    """One whole tensor, as the columnar format carries each input."""
    rule = rule_for(dtype)
    shape = dense_shape(value)
    array = fast_tensor(value, shape, rule)
    if array is None:
        array = build(exact_leaves(value, shape, rule), shape, rule)
    return array


def fast_tensor(value: Any, shape: Shape, rule: _Rule) -> np.ndarray | None:
    """The tensor if ``value`` is well formed, else None (the exact walk says why)."""
    leaves = [value]
    for size in shape:
        if set(map(type, leaves)) != {list} or set(map(len, leaves)) != {size}:
            return None
        leaves = list(chain.from_iterable(leaves))
    if not set(map(type, leaves)) <= rule.leaf_types:
        return None
    try:
        return build(leaves, shape, rule)
    except (OverflowError, ValueError):
        return None  # an integer out of range: the exact walk names it


def exact_leaves(value: Any, shape: Shape, rule: _Rule) -> list[Any]:
    """TF's FillTensorProto: every leaf in order, or its error for the first bad one."""
    leaves: list[Any] = []
    rank = check_rank(shape)

    def fill(item: Any, level: int) -> None:
        if not isinstance(item, list):
            if level != rank:
                raise InvalidArgument(
                    f"JSON Value: {debug_string(item)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            leaves.append(_leaf(item, rule))
            return
        if level >= rank:
            raise InvalidArgument(
                f"Encountered list at unexpected level: {level} expected < {rank}"
            )
        if len(item) != shape[level]:
            raise InvalidArgument(
                f"Encountered list at unexpected size: {len(item)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        for element in item:
            fill(element, level + 1)

    fill(value, 0)
    return leaves


def _leaf(item: Any, rule: _Rule) -> Any:
    if isinstance(item, dict):
        if rule.dtype.kind != "O":
            raise _type_error(item, rule)
        return decode_base64(item)
    if not rule.leaf_types:
        raise Unimplemented(
            f"Conversion of JSON Value: {debug_string(item)} to type: {rule.name}"
        )
    if not rule.accepts(item):
        raise _type_error(item, rule)
    if isinstance(item, str):
        return utf8(item)
    if isinstance(item, int) and rule.dtype.kind not in "iub":
        try:
            return float(item)
        except OverflowError:
            raise InvalidArgument(f"JSON Parse error: {NUMBER_TOO_BIG}") from None
    return item


def _type_error(item: Any, rule: _Rule) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {debug_string(item)} Type: {type_name(item)} "
        f"is not of expected type: {rule.name}"
    )


def is_base64_object(value: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else."""
    return (
        isinstance(value, dict)
        and len(value) == 1
        and isinstance(value.get(B64_KEY), str)
    )


def decode_base64(value: dict[str, Any]) -> bytes:
    if not is_base64_object(value):
        raise InvalidArgument(
            f"JSON Value: {debug_string(value)} not formatted correctly for base64 data"
        )
    text = "".join(value[B64_KEY].split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("Unable to base64 decode") from None


def utf8(text: str) -> bytes:
    """The bytes a JSON string carried; lone surrogates stay visible to the UTF-8 check."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def check_rank(shape: Shape) -> int:
    if len(shape) > MAX_RANK:
        raise InvalidArgument(
            f"JSON tensor of rank {len(shape)} is deeper than the {MAX_RANK} dimensions supported"
        )
    return len(shape)


def build(leaves: list[Any], shape: Shape, rule: _Rule) -> np.ndarray:
    """A tensor from checked leaves; raises OverflowError for an integer out of range."""
    check_rank(shape)
    dtype = rule.dtype
    if dtype.kind == "O":
        items = (utf8(v) if isinstance(v, str) else v for v in leaves)
        return np.fromiter(items, dtype=object, count=len(leaves)).reshape(shape)
    if dtype.kind in "iub":
        return np.array(leaves, dtype=dtype).reshape(shape)
    # Through float64 as rapidjson's GetFloat() goes through double; too large → inf, as there.
    with np.errstate(over="ignore"):
        return np.array(leaves, dtype=np.float64).astype(dtype).reshape(shape)
