"""The request path's shortcuts give exactly what the plain calls would."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from onnx_serving.codec.tensors import KINDS, TensorProto, datatype_of, encode_into, make_ndarray
from onnx_serving.server.metrics import TF_LATENCY_BUCKETS, Tally


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect()
            for s in family.samples if not s.name.endswith("_created")]


def _same_samples(one: CollectorRegistry, other: CollectorRegistry) -> bool:
    """The same samples; sums equal up to float rounding (added in another order)."""
    a, b = _samples(one), _samples(other)
    return [(n, labels) for n, labels, _ in a] == [(n, labels) for n, labels, _ in b] and \
        [v for *_, v in a] == pytest.approx([v for *_, v in b], rel=1e-12)


def test_the_tally_gives_what_prometheus_client_would() -> None:
    """Counts kept per thread and folded give the same samples as prometheus-client's own
    ``inc`` and ``observe``, across threads and folds, bounds included."""
    # Bounds themselves (a value on a bound belongs to it), between them, past the last.
    values = [0.0, 10.0, 10.000001, 18.0, 32.4, 33.0, *TF_LATENCY_BUCKETS[5:9], 1e12, 5.5]
    plain, tallied = CollectorRegistry(), CollectorRegistry()

    def metrics(registry: CollectorRegistry) -> tuple[Histogram, Counter]:
        return (Histogram("h", "h", ["m"], buckets=TF_LATENCY_BUCKETS, registry=registry),
                Counter("c", "c", ["m"], registry=registry))

    histogram, counter = metrics(plain)
    tally, (tallied_histogram, tallied_counter) = Tally(), metrics(tallied)
    observe = tally.histogram(tallied_histogram.labels("a"))
    inc = tally.counter(tallied_counter.labels("a"))
    assert observe != tallied_histogram.labels("a").observe  # the tally, not the fallback

    def both(value: float) -> None:
        histogram.labels("a").observe(value)
        counter.labels("a").inc()
        observe(value)
        inc()

    for value in values[:5]:
        both(value)
    tally.fold()
    assert _same_samples(tallied, plain)
    workers = [threading.Thread(target=lambda: [both(v) for v in values]) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    both(7.0)
    tally.fold()
    tally.fold()  # nothing new: nothing added twice
    assert _same_samples(tallied, plain)
    assert len(tally._shards) == 1  # the ended threads were folded and forgotten


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


def test_a_direct_tally_counts_at_once() -> None:
    """With --num_workers other processes read the values at any time: nothing waits."""
    registry = CollectorRegistry()
    tally = Tally(direct=True)
    histogram = Histogram("h", "h", buckets=TF_LATENCY_BUCKETS, registry=registry)
    counter = Counter("c", "c", registry=registry)
    observe, inc = tally.histogram(histogram), tally.counter(counter)
    for value in (5.0, 10.0, 1e9):
        observe(value)
        inc()
    assert registry.get_sample_value("c_total") == 3
    assert registry.get_sample_value("h_count") == 3
    assert registry.get_sample_value("h_bucket", {"le": "10.0"}) == 2
