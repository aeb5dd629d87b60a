"""tf.Example parsing, done by the server in front of a graph cut after TensorFlow's parse.

A SavedModel that takes serialized ``tf.Example``s (Estimator exports, TF
Serving's half_plus_two, every Classify and Regress signature) parses them
with ``ParseExample``/``ParseExampleV2``, which ONNX has no operator for.
``onnx-serving convert`` records that op's feature spec in signatures.json
and converts the graph from the parsed tensors on; this stage parses the
request's examples into those tensors, with TensorFlow's semantics and
messages: fixed-length features (``FixedLenFeature``, with or without a
default) become ``[N, *shape]`` tensors, variable-length ones
(``VarLenFeature``) the indices, values and dense shape of a SparseTensor.
Every feature of the spec is checked, used by the graph or not, as
TensorFlow's op does.

The bytes are parsed by protobuf's C parser (upb) through the Example
message, the one part of the protos this runtime uses: tf.Example is the
model's input format here, not a transport. The values are gathered per
feature with one numpy call each.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from onnx_serving.protos.tensorflow.core.example import example_pb2
from onnx_serving.server.errors import InvalidArgument, ModelLoadError

# The Feature oneof each dtype is read from, and TensorFlow's name for the dtype in messages.
_KINDS: dict[str, tuple[str, np.dtype, str]] = {
    "DT_FLOAT": ("float_list", np.dtype(np.float32), "float"),
    "DT_INT64": ("int64_list", np.dtype(np.int64), "int64"),
    "DT_STRING": ("bytes_list", np.dtype(object), "string"),
}
_TF_TYPE_BY_KIND = {kind: name for kind, _, name in _KINDS.values()}
_UNKNOWN_NAME = "<unknown>"  # TensorFlow's example name when the request names none


@dataclass(frozen=True)
class DenseFeature:
    """A ``FixedLenFeature``: every example gives ``prod(shape)`` values, or the default."""

    key: str
    dtype_name: str
    shape: tuple[int, ...]
    default: np.ndarray | None  # flat, prod(shape) values; None: required
    name: str | None  # the graph input it feeds; None when the graph does not use it


@dataclass(frozen=True)
class SparseFeature:
    """A ``VarLenFeature``: any number of values per example, as a SparseTensor's parts."""

    key: str
    dtype_name: str
    indices: str | None  # graph inputs fed, each None when the graph does not use it
    values: str | None
    dense_shape: str | None


@dataclass(frozen=True)
class ExampleParse:
    """Parses one signature input (a vector of serialized tf.Example) into graph feeds."""

    input: str  # the signature's input alias that carries the examples
    dense: tuple[DenseFeature, ...]
    sparse: tuple[SparseFeature, ...]

    @cached_property
    def keys(self) -> frozenset[str]:
        """The features the spec reads, dense and sparse: found once, not per request."""
        return frozenset(f.key for f in self.dense) | {f.key for f in self.sparse}

    @property
    def graph_inputs(self) -> set[str]:
        names = {f.name for f in self.dense}
        for s in self.sparse:
            names |= {s.indices, s.values, s.dense_shape}
        return {n for n in names if n is not None}

    def parse(self, serialized: np.ndarray) -> dict[str, np.ndarray]:
        """Graph input → tensor. A scalar (one example) gives tensors without the batch dim."""
        if serialized.ndim > 1:
            raise InvalidArgument(
                f"Expected serialized to be a scalar or vector, got shape: "
                f"[{','.join(map(str, serialized.shape))}]"
            )
        scalar = serialized.ndim == 0
        features = [_spec_features(value, self.keys) for value in serialized.reshape(-1)]
        feeds: dict[str, np.ndarray] = {}
        for dense in self.dense:
            array = _parse_dense(dense, features)  # every feature is checked, as in TensorFlow
            if dense.name is not None:
                feeds[dense.name] = array.reshape(array.shape[1:]) if scalar else array
        for sparse in self.sparse:
            indices, values, dense_shape = _parse_sparse(sparse, features)
            if scalar:
                indices, dense_shape = indices[:, 1:], dense_shape[1:]
            for name, array in zip((sparse.indices, sparse.values, sparse.dense_shape),
                                   (indices, values, dense_shape), strict=True):
                if name is not None:
                    feeds[name] = array
        return feeds


# A feature of one example as the spec reads it: its kind (the Feature oneof set) and
# its values, copied out of the parsed message.
_Found = tuple[str, list[Any]]


def _spec_features(value: object, keys: frozenset[str]) -> dict[str, _Found]:
    """The example's features that the spec names, by key; one holding no list at all is
    left out (TensorFlow treats it as absent). Only these outlive the parse: a parsed
    Example costs many times its bytes, and a request's examples (each with its context
    merged in) would otherwise all be held at once."""
    data = value.encode() if isinstance(value, str) else value
    if not isinstance(data, bytes):
        raise InvalidArgument(f"Could not parse example input, value: '{value}'")
    try:
        feature_map = example_pb2.Example.FromString(data).features.feature
    except DecodeError as exc:
        raise InvalidArgument(
            f"Could not parse example input, value: '{data.decode('latin-1')}'"
        ) from exc
    kept: dict[str, _Found] = {}
    for key in keys:
        feature = feature_map.get(key)
        kind = None if feature is None else feature.WhichOneof("kind")
        if kind is not None:
            kept[key] = (kind, getattr(feature, kind).value[:])
    return kept


def _values(
    key: str, dtype_name: str, found: _Found, index: int, *, sparse: bool = False
) -> list[Any]:
    """The feature's values, once its kind is the spec's."""
    kind, values = found
    if kind != _KINDS[dtype_name][0]:
        got, expected = _TF_TYPE_BY_KIND[kind], _KINDS[dtype_name][2]
        raise _example_error(key, index, (
            f"Data types don't match. Expected type: {expected}, Actual type: {got}" if sparse
            else f"Data types don't match. Data type: {got} but expected type: {expected}"
        ))  # TensorFlow words the two cases differently
    return values


def _parse_dense(spec: DenseFeature, features: Sequence[Mapping[str, _Found]]) -> np.ndarray:
    dtype = _KINDS[spec.dtype_name][1]
    size = int(np.prod(spec.shape, dtype=np.int64))
    lists: list[Sequence[Any] | np.ndarray] = []
    for index, feature_map in enumerate(features):
        feature = feature_map.get(spec.key)
        found = None if feature is None else _values(spec.key, spec.dtype_name, feature, index)
        values: Sequence[Any] | np.ndarray
        if found is None:
            if spec.default is None:
                raise InvalidArgument(
                    f"Name: {_UNKNOWN_NAME}, Feature: {spec.key} (data type: "
                    f"{_KINDS[spec.dtype_name][2]}) is required but could not be found."
                )
            values = spec.default
        elif len(found) != size:
            raise _example_error(
                spec.key, index, f"Number of {_KINDS[spec.dtype_name][2]} values != expected.  "
                f"Values size: {len(found)} but output shape: "
                f"[{','.join(map(str, spec.shape))}]"
            )
        else:
            values = found
        lists.append(values)
    shape = (len(features), *spec.shape)
    if dtype.kind == "O":
        flat = np.empty(len(features) * size, dtype=object)
        flat[:] = list(itertools.chain.from_iterable(lists))
        return flat.reshape(shape)
    return np.fromiter(
        itertools.chain.from_iterable(lists), dtype, count=len(features) * size
    ).reshape(shape)


def _parse_sparse(
    spec: SparseFeature, features: Sequence[Mapping[str, _Found]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dtype = _KINDS[spec.dtype_name][1]
    lists: list[Sequence[Any]] = []
    for index, feature_map in enumerate(features):
        feature = feature_map.get(spec.key)
        values = None if feature is None else _values(
            spec.key, spec.dtype_name, feature, index, sparse=True
        )
        lists.append(values or ())
    lengths = np.fromiter((len(v) for v in lists), np.int64, count=len(lists))
    total = int(lengths.sum())
    rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns = np.arange(total, dtype=np.int64) - starts
    if dtype.kind == "O":
        values_array = np.empty(total, dtype=object)
        values_array[:] = list(itertools.chain.from_iterable(lists))
    else:
        values_array = np.fromiter(itertools.chain.from_iterable(lists), dtype, count=total)
    width = int(lengths.max()) if len(lists) else 0
    return (np.stack([rows, columns], axis=1), values_array,
            np.array([len(lists), width], dtype=np.int64))


def _example_error(key: str, index: int, detail: str) -> InvalidArgument:
    return InvalidArgument(f"Name: {_UNKNOWN_NAME}, Key: {key}, Index: {index}.  {detail}")


def read_parse_spec(raw: Any, where: str) -> ExampleParse:
    """A signature's ``parse_example`` entry (docs/signatures.md)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("input"), str):
        raise ModelLoadError(f'{where}: "parse_example" needs an "input" alias')
    try:
        dense = tuple(_dense(entry) for entry in raw.get("dense", ()))
        sparse = tuple(_sparse(entry) for entry in raw.get("sparse", ()))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f'{where}: bad "parse_example" feature: {exc!r}') from exc
    return ExampleParse(raw["input"], dense, sparse)


def _dtype(entry: Mapping[str, Any]) -> str:
    name = entry["dtype"]
    if name not in _KINDS:
        raise ValueError(f"feature {entry['key']!r} has dtype {name}; tf.Example holds only "
                         f"{', '.join(_KINDS)}")
    return str(name)


def _dense(entry: Mapping[str, Any]) -> DenseFeature:
    dtype_name = _dtype(entry)
    shape = tuple(int(d) for d in entry["shape"])
    if any(d < 0 for d in shape):
        raise ValueError(f"feature {entry['key']!r} has shape {list(shape)}; only fixed "
                         "sizes are supported")
    default = entry.get("default")
    array: np.ndarray | None = None
    if default is not None:
        if dtype_name == "DT_STRING":
            array = np.array([base64.b64decode(v) for v in default], dtype=object)
        else:
            array = np.array(default, dtype=_KINDS[dtype_name][1]).reshape(-1)
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise ValueError(f"feature {entry['key']!r}: default has {array.size} values for "
                             f"shape {list(shape)}")
    return DenseFeature(str(entry["key"]), dtype_name, shape, array, entry.get("name"))


def _sparse(entry: Mapping[str, Any]) -> SparseFeature:
    return SparseFeature(
        str(entry["key"]), _dtype(entry),
        entry.get("indices"), entry.get("values"), entry.get("dense_shape"),
    )
