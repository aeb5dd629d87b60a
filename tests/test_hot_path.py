"""The request path's shortcuts give exactly what the plain calls would."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from onnx_serving.codec.tensors import KINDS, TensorProto, datatype_of, encode_into, make_ndarray
from onnx_serving.server.metrics import TF_LATENCY_BUCKETS, _fast_observe


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect()
            for s in family.samples if not s.name.endswith("_created")]


def test_fast_observe_fills_the_same_buckets_as_observe() -> None:
    # Bounds themselves (a value on a bound belongs to it), between them, past the last.
    values = [0.0, 10.0, 10.000001, 18.0, 32.4, 33.0, *TF_LATENCY_BUCKETS[5:9], 1e12, 5.5]
    plain, fast = CollectorRegistry(), CollectorRegistry()
    by_observe = Histogram("h", "h", ["m"], buckets=TF_LATENCY_BUCKETS, registry=plain).labels("a")
    child = Histogram("h", "h", ["m"], buckets=TF_LATENCY_BUCKETS, registry=fast).labels("a")
    by_fast = _fast_observe(child)
    assert by_fast != child.observe  # the shortcut, not the fallback
    for value in values:
        by_observe.observe(value)
        by_fast(value)
    assert _samples(fast) == _samples(plain)


def _field_by_field(array: np.ndarray, tensor_content: bool) -> TensorProto:
    proto = TensorProto(dtype=datatype_of(array.dtype))  # type: ignore[arg-type]
    for d in array.shape:
        proto.tensor_shape.dim.add(size=d)
    if array.size and tensor_content:
        proto.tensor_content = array.astype(array.dtype.newbyteorder("<")).tobytes()
    elif array.size:
        getattr(proto, KINDS[proto.dtype].field).extend(array.reshape(-1).tolist())
    return proto


@pytest.mark.parametrize("array", [
    np.array(3.5, np.float32),  # a scalar: no shape field at all
    np.ones((1, 1), np.float32),
    np.arange(300, dtype=np.int64).reshape(3, 100),
    np.array([-5, 7, 2**31 - 1], np.int32),
    np.array([[True, False]]),
    np.arange(128, dtype=np.uint8),
    np.zeros((0, 5), np.float32),
    np.ones((2, 0, 3), np.float64),
    np.ones((1, 200_000), np.float64),  # a dimension of three varint bytes
])
@pytest.mark.parametrize("tensor_content", [False, True])
def test_tensors_encode_as_field_by_field(array: np.ndarray, tensor_content: bool) -> None:
    encoded = TensorProto()
    encode_into(encoded, array, tensor_content=tensor_content)
    expected = _field_by_field(array, tensor_content)
    assert encoded.SerializeToString() == expected.SerializeToString()
    decoded = make_ndarray(encoded)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert np.array_equal(decoded, array)


@pytest.mark.parametrize(("dtype", "field", "values"), [
    (np.int8, "int_val", [-129, 127, 300]),  # out of range wraps, as numpy's cast does
    (np.uint16, "int_val", [-1, 65535]),
    (np.float32, "float_val", [0.1, -2.5]),
    (np.uint64, "uint64_val", [2**64 - 1]),
    (np.bool_, "bool_val", [True, False]),
])
def test_typed_fields_decode_as_numpy_casts_them(dtype: type, field: str,
                                                 values: list[float]) -> None:
    proto = TensorProto(dtype=datatype_of(np.dtype(dtype)))  # type: ignore[arg-type]
    proto.tensor_shape.dim.add(size=len(values))
    getattr(proto, field).extend(values)
    expected = np.array(getattr(proto, field)).astype(dtype)
    decoded = make_ndarray(proto)
    assert decoded.dtype == np.dtype(dtype) and np.array_equal(decoded, expected)
