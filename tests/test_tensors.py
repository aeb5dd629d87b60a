"""codec/tensors.py against TensorFlow's own codec.

Two references: ``tf.make_tensor_proto``/``tf.make_ndarray`` (TF's Python
side, what clients send) and ``tf.io.parse_tensor``, which runs the C++
``Tensor::FromProto`` that TF Serving decodes requests with. Where the two
disagree (surplus values in a typed field), the C++ rule is the one to match.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf.internal.encoder import _VarintBytes
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2

from onnx_serving.codec import tensors
from onnx_serving.codec.tensors import (
    KINDS,
    MAX_FILL_BYTES,
    TensorCodecError,
    TensorProto,
    TensorTooLarge,
    datatype_of,
    dtype_name,
    encode_varints,
    make_ndarray,
    make_tensor_proto,
)
from onnx_serving.protos.tensorflow.core.framework import types_pb2

DT_STRING = types_pb2.DT_STRING
NUMERIC = [dt for dt in KINDS if dt != DT_STRING]
STRINGS = np.array([b"", b"a\x00b\x00", "é ✓ 🙂".encode(), bytes(range(256))], dtype=object)

# Bit patterns: NaN, NaN with a payload, +inf, -inf, -0, the smallest subnormal, 1.0, max.
HALF_BITS = [0x7E00, 0x7E01, 0x7C00, 0xFC00, 0x8000, 0x0001, 0x3C00, 0x7BFF]
BFLOAT16_BITS = [0x7FC0, 0x7FC1, 0x7F80, 0xFF80, 0x8000, 0x0001, 0x3F80, 0x7F7F]


def ids(dtype: int) -> str:
    return dtype_name(dtype)


def tf_dtype(dtype: int) -> tf.DType:
    """TF's dtype, or a skip where this TF has no numpy type for it (older float8s)."""
    try:
        result = tf.as_dtype(dtype)
        result.as_numpy_dtype  # noqa: B018 (raises where TF lacks the type)
    except (TypeError, KeyError, AttributeError):
        pytest.skip(f"TensorFlow {tf.__version__} has no numpy type for {dtype_name(dtype)}")
    return result


def sample(dtype: int) -> np.ndarray:
    """Values that stress each encoding: extremes, signs, specials; shape (2, 4)."""
    kind = KINDS[dtype]
    tf_dtype(dtype)
    if dtype == DT_STRING:
        return STRINGS.reshape(2, 2).repeat(2, axis=1)
    numpy = kind.numpy
    if kind.wire == "bits16":
        bits = HALF_BITS if dtype == types_pb2.DT_HALF else BFLOAT16_BITS
        values = np.array(bits, np.uint16).view(numpy)
    elif kind.wire == "bytes":
        values = np.array([0x00, 0x80, 0x7F, 0xFF, 0x01, 0x38, 0x7C, 0xFE], np.uint8).view(numpy)
    elif numpy == np.bool_:
        values = np.array([True, False, True, True, False, False, True, False])
    elif numpy.kind in "iu":
        info = np.iinfo(numpy)
        small = -1 if numpy.kind == "i" else 2
        values = np.array([info.min, info.max, 0, 1, small, info.max // 3, 7, 100], numpy)
    elif numpy.kind == "c":
        real = np.array([1.0, -0.5, np.nan, -0.0, np.inf, 3.0, 1e-30, 0.0])
        values = np.empty(8, numpy)
        values.real, values.imag = real, real[::-1]
    else:
        values = np.array([-1.5, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.0e38], numpy)
    return values.reshape(2, 4)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype, shape and bits (NaNs included)."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
    else:
        assert actual.tobytes() == expected.tobytes()


def fields(proto: TensorProto) -> set[str]:
    """The fields that carry values."""
    return {f.name for f, _ in proto.ListFields()} - {"dtype", "tensor_shape"}


def to_tf(proto: TensorProto) -> tf_tensor_pb2.TensorProto:
    return tf_tensor_pb2.TensorProto.FromString(proto.SerializeToString())


def from_tf(proto: tf_tensor_pb2.TensorProto) -> TensorProto:
    return TensorProto.FromString(proto.SerializeToString())


def cpp(proto: TensorProto) -> np.ndarray:
    """What TF's C++ (and so TF Serving) decodes ``proto`` to."""
    result = tf.io.parse_tensor(proto.SerializeToString(), tf_dtype(proto.dtype)).numpy()
    return np.asarray(result, dtype=object if proto.dtype == DT_STRING else None)


def tf_encode(values: np.ndarray | bytes, **options: object) -> TensorProto | None:
    """tf.make_tensor_proto, as our proto; None where TF cannot encode the type (fnuz float8s)."""
    try:
        return from_tf(tf.make_tensor_proto(values, **options))
    except TypeError as exc:
        if "not supported in TensorProto" in str(exc):
            return None
        raise


def tf_make_ndarray(proto: TensorProto | tf_tensor_pb2.TensorProto) -> np.ndarray | None:
    """tf.make_ndarray; None where its typed-field path lacks the type (the fnuz float8s)."""
    if isinstance(proto, TensorProto):
        proto = to_tf(proto)
    try:
        return tf.make_ndarray(proto)
    except TypeError:
        if KINDS[proto.dtype].wire == "bytes" and not proto.tensor_content:
            return None
        raise


def assert_same_as_tf(proto: TensorProto | tf_tensor_pb2.TensorProto, expected: np.ndarray) -> None:
    actual = tf_make_ndarray(proto)
    if actual is not None:
        assert_same(actual, expected)


def typed(dtype: int, shape: list[int], values: np.ndarray) -> TensorProto:
    """A proto whose typed field protobuf itself filled from ``values``."""
    proto = TensorProto(dtype=dtype)
    for d in shape:
        proto.tensor_shape.dim.add(size=d)
    kind = KINDS[dtype]
    flat = values.reshape(-1)
    if kind.wire == "bytes":
        setattr(proto, kind.field, flat.tobytes())
    elif kind.wire == "bits16":
        getattr(proto, kind.field).extend(flat.view(np.uint16).tolist())
    elif kind.numpy.kind == "c":
        getattr(proto, kind.field).extend(flat.view(flat.real.dtype).tolist())
    else:
        getattr(proto, kind.field).extend(flat.tolist())
    return proto


@pytest.mark.parametrize("tensor_content", [False, True])
@pytest.mark.parametrize("dtype", list(KINDS), ids=ids)
def test_encoding_decodes_in_tensorflow(dtype: int, tensor_content: bool) -> None:
    values = sample(dtype)
    proto = make_tensor_proto(values, tensor_content=tensor_content)
    assert proto.dtype == dtype
    assert [d.size for d in proto.tensor_shape.dim] == [2, 4]
    uses_content = tensor_content and dtype != DT_STRING
    assert fields(proto) == {"tensor_content" if uses_content else KINDS[dtype].field}
    assert_same(make_ndarray(proto), values)
    assert_same(cpp(proto), values)
    assert_same_as_tf(proto, values)


@pytest.mark.parametrize("dtype", list(KINDS), ids=ids)
def test_typed_fields_are_protobufs_own_bytes(dtype: int) -> None:
    """The numpy-built packed field is byte for byte what protobuf serializes."""
    values = sample(dtype)
    ours = make_tensor_proto(values)
    assert ours.SerializeToString() == typed(dtype, [2, 4], values).SerializeToString()


@pytest.mark.parametrize("dtype", list(KINDS), ids=ids)
def test_decodes_tensorflows_encodings(dtype: int) -> None:
    values = sample(dtype)
    flat = values.reshape(-1)
    whole = tf_encode(values)  # tensor_content for most types
    assert whole is not None
    assert_same(make_ndarray(whole), values)
    protos = [
        whole,
        tf_encode(flat[1]),  # a scalar, in the typed field
        tf_encode(flat[:3], shape=[2, 3]),  # a short typed field, to be filled
    ]
    # TF encodes the fnuz float8s in tensor_content only.
    for proto in filter(None, protos):
        ours = make_ndarray(proto)
        assert_same(ours, cpp(proto))
        assert_same_as_tf(proto, ours)


@pytest.mark.parametrize("dtype", list(KINDS), ids=ids)
def test_fill_rule(dtype: int) -> None:
    """A short typed field repeats its last value, an empty one means zeros, surplus is ignored."""
    values = sample(dtype).reshape(-1)
    numpy = values.dtype
    short = typed(dtype, [2, 3], values[:2])
    expected = np.array([values[0], *[values[1]] * 5], dtype=numpy).reshape(2, 3)
    empty = typed(dtype, [3], values[:0])
    zero = np.full(3, b"", dtype=object) if dtype == DT_STRING else np.zeros(3, numpy)
    surplus = typed(dtype, [3], values)
    for proto, want in [(short, expected), (empty, zero), (surplus, values[:3])]:
        assert_same(make_ndarray(proto), want)
        assert_same(cpp(proto), want)
    if dtype != DT_STRING:  # TF's Python pads strings with "" (str), not b""
        assert_same_as_tf(short, expected)
        assert_same_as_tf(empty, zero)


@pytest.mark.parametrize("dtype", [types_pb2.DT_FLOAT, types_pb2.DT_INT8, DT_STRING], ids=ids)
def test_the_fill_is_bounded(dtype: int) -> None:
    """TF fills whatever its allocator grants; here what the field does not carry may
    fill MAX_FILL_BYTES, and a tensor over it is refused before any allocation."""
    itemsize = KINDS[dtype].numpy.itemsize
    values = sample(dtype).reshape(-1)[:1]
    largest = MAX_FILL_BYTES // itemsize + 1  # one value carried, the rest filled
    assert make_ndarray(typed(dtype, [largest], values)).shape == (largest,)
    for shape in ([largest + 1], [2**27, 2**27]):
        with pytest.raises(TensorTooLarge, match="limit"):
            make_ndarray(typed(dtype, shape, values))


def test_complex_pairs_are_whole() -> None:
    """An odd count of complex parts: the dangling real part is dropped, as in C++."""
    proto = typed(types_pb2.DT_COMPLEX64, [2], np.array([1, 2, 3], np.float32))
    proto.tensor_shape.dim[0].size = 2
    assert_same(make_ndarray(proto), np.array([1 + 2j, 1 + 2j], np.complex64))
    assert_same(cpp(proto), make_ndarray(proto))


@pytest.mark.parametrize("delta", [-1, 1])
@pytest.mark.parametrize("dtype", NUMERIC, ids=ids)
def test_tensor_content_of_the_wrong_size(dtype: int, delta: int) -> None:
    proto = make_tensor_proto(sample(dtype), tensor_content=True)
    proto.tensor_content = (
        proto.tensor_content[:delta] if delta < 0 else proto.tensor_content + b"\0"
    )
    with pytest.raises(TensorCodecError, match="tensor_content has"):
        make_ndarray(proto)
    with pytest.raises(tf.errors.InvalidArgumentError):
        cpp(proto)


def test_strings_in_tensorflows_tensor_content_encoding() -> None:
    """TF's C++ accepts DT_STRING in tensor_content (lengths as varints, then the bytes)."""
    values = [*STRINGS, b"x" * 300]
    content = b"".join(_VarintBytes(len(v)) for v in values) + b"".join(values)
    proto = TensorProto(dtype=DT_STRING, tensor_content=content)
    proto.tensor_shape.dim.add(size=len(values))
    assert make_ndarray(proto).tolist() == values == cpp(proto).tolist()
    for broken in (content[:-1], content + b"!", content[:2]):
        proto.tensor_content = broken
        with pytest.raises(TensorCodecError):
            make_ndarray(proto)
        with pytest.raises(tf.errors.InvalidArgumentError):
            cpp(proto)


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3)])
@pytest.mark.parametrize("dtype", list(KINDS), ids=ids)
def test_empty_tensors(dtype: int, shape: tuple[int, ...]) -> None:
    values = np.empty(shape, dtype=sample(dtype).dtype)
    for tensor_content in (False, True):
        proto = make_tensor_proto(values, tensor_content=tensor_content)
        assert fields(proto) == set()
        assert_same(make_ndarray(proto), values)
        assert_same(cpp(proto), values)
    if (theirs := tf_encode(values)) is not None:
        assert_same(make_ndarray(theirs), values)
    # C++ reads no values for an empty tensor, even stray tensor_content.
    stray = make_tensor_proto(values)
    if dtype != DT_STRING:
        stray.tensor_content = b"\0" * 8
        assert_same(make_ndarray(stray), values)
        assert_same(cpp(stray), values)


@pytest.mark.parametrize("dtype", list(KINDS), ids=ids)
def test_scalars(dtype: int) -> None:
    for value in sample(dtype).reshape(-1)[:3]:
        scalar = np.array(value, dtype=sample(dtype).dtype)
        for tensor_content in (False, True):
            proto = make_tensor_proto(scalar, tensor_content=tensor_content)
            assert len(proto.tensor_shape.dim) == 0
            assert_same(make_ndarray(proto), scalar)
            assert_same(cpp(proto), scalar)
        if (theirs := tf_encode(scalar)) is not None:
            assert_same(make_ndarray(theirs), scalar)


def test_integer_extremes_on_the_wire() -> None:
    """Negative small ints are sign-extended varints; 64-bit extremes survive."""
    for numpy in (np.int8, np.int16, np.int32):
        values = np.array([np.iinfo(numpy).min, -1, -2, np.iinfo(numpy).max], numpy)
        proto = make_tensor_proto(values)
        assert list(proto.int_val) == values.tolist()
        assert list(to_tf(proto).int_val) == values.tolist()
    int64 = np.array([np.iinfo(np.int64).min, -1, np.iinfo(np.int64).max], np.int64)
    assert list(make_tensor_proto(int64).int64_val) == int64.tolist()
    assert_same(cpp(make_tensor_proto(int64)), int64)
    uint64 = np.array([np.iinfo(np.uint64).max, 2**63, 0], np.uint64)
    assert list(make_tensor_proto(uint64).uint64_val) == [2**64 - 1, 2**63, 0]
    assert_same(cpp(make_tensor_proto(uint64)), uint64)
    theirs = from_tf(tf.make_tensor_proto(uint64, shape=[4]))  # typed, filled
    assert_same(make_ndarray(theirs), np.array([2**64 - 1, 2**63, 0, 0], np.uint64))


@pytest.mark.parametrize("dtype", [d for d in KINDS if KINDS[d].element is not None], ids=ids)
@pytest.mark.parametrize("repeats", [1, 8, 9, 125])  # 8, 64, 72 and 1,000 values
def test_short_and_long_typed_fields_decode_alike(dtype: int, repeats: int) -> None:
    """A typed field is read value by value up to 64 values and in bulk past them: both
    give what TF's C++ gives."""
    values = np.tile(sample(dtype).reshape(-1), repeats)
    proto = typed(dtype, [values.size], values)
    assert len(getattr(proto, KINDS[dtype].field)) == values.size
    assert_same(make_ndarray(proto), cpp(proto))


def test_out_of_range_typed_values_wrap_as_in_cpp() -> None:
    proto = TensorProto(dtype=types_pb2.DT_INT8, int_val=[300, -129, 255])
    proto.tensor_shape.dim.add(size=3)
    assert_same(make_ndarray(proto), cpp(proto))


def test_strings() -> None:
    proto = make_tensor_proto(STRINGS)
    assert list(proto.string_val) == STRINGS.tolist()
    assert_same(make_ndarray(proto), STRINGS)
    assert_same(cpp(proto), STRINGS)
    assert tf.make_ndarray(to_tf(proto)).tolist() == STRINGS.tolist()
    assert_same(make_ndarray(from_tf(tf.make_tensor_proto(STRINGS))), STRINGS)
    assert_same(make_ndarray(from_tf(tf.make_tensor_proto(b"a\x00"))), np.array(b"a\x00", object))
    # str is UTF-8; numpy's fixed-width str and bytes arrays work too.
    text = np.array(["é", "a\x00b", ""])
    assert list(make_tensor_proto(text).string_val) == ["é".encode(), b"a\x00b", b""]
    assert list(make_tensor_proto(np.array([b"xy", b"z"])).string_val) == [b"xy", b"z"]
    with pytest.raises(TensorCodecError, match="int"):
        make_tensor_proto(np.array([b"a", 1], dtype=object))


def test_byte_order_and_layout_do_not_matter() -> None:
    values = np.arange(12, dtype=np.float64).reshape(3, 4)
    wide = np.zeros((3, 8))
    wide[:, ::2] = values
    strided = wide[:, ::2]
    for variant in (values.astype(">f8"), np.asfortranarray(values), strided):
        for tensor_content in (False, True):
            expected = make_tensor_proto(values, tensor_content=tensor_content)
            assert make_tensor_proto(variant, tensor_content=tensor_content) == expected
    assert_same(make_ndarray(make_tensor_proto(values.T)), values.T.copy())


def test_unsupported() -> None:
    with pytest.raises(TensorCodecError, match="DT_RESOURCE"):
        make_ndarray(TensorProto(dtype=types_pb2.DT_RESOURCE))
    with pytest.raises(TensorCodecError):
        datatype_of(np.dtype("datetime64[s]"))
    proto = TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=-1)
    with pytest.raises(TensorCodecError, match="negative"):
        make_ndarray(proto)
    proto.tensor_shape.Clear()
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(TensorCodecError, match="unknown rank"):
        make_ndarray(proto)


def varint_values() -> np.ndarray:
    edges = [0, 1, 0x7F, 0x80, 0xFF, 300, 2**63 - 1, 2**63, 2**64 - 1]
    edges += [2 ** (7 * n) + d for n in range(1, 10) for d in (-1, 0)]
    rng = np.random.default_rng(0)
    random = rng.integers(0, 2**64 - 1, size=500, dtype=np.uint64, endpoint=True)
    random >>= rng.integers(0, 64, size=500).astype(np.uint64)  # every length
    return np.concatenate([np.array(edges, np.uint64), random])


def test_encode_varints_matches_protobuf(monkeypatch: pytest.MonkeyPatch) -> None:
    values = varint_values()
    expected = b"".join(_VarintBytes(int(v)) for v in values)
    assert encode_varints(values) == expected
    assert encode_varints(np.arange(128, dtype=np.uint64)) == bytes(range(128))
    assert encode_varints(np.array([], np.uint64)) == b""
    monkeypatch.setattr(tensors, "_CHUNK", 7)  # chunk boundaries change nothing
    assert encode_varints(values) == expected
