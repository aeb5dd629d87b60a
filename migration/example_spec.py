"""A recorded ``parse_example`` spec, used in TensorFlow to validate a cut graph.

Validation feeds the SavedModel serialized tf.Examples and the ONNX graph what
TensorFlow's own ``parse_example`` makes of them under the recorded spec: that
checks the spec and the cut together. (The server's parse stage is checked
against TensorFlow's by the test suite.)
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

_DTYPES = {"DT_FLOAT": "float32", "DT_INT64": "int64", "DT_STRING": "string"}


def random_examples(parse: Mapping[str, Any], rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` serialized Examples: every feature set, except that features with a
    default are left out of every other example, and var-length ones vary in length."""
    import tensorflow as tf

    serialized = []
    for index in range(count):
        features: dict[str, Any] = {}
        for dense in parse["dense"]:
            if dense["default"] is not None and index % 2:
                continue
            features[dense["key"]] = _feature(
                tf, dense["dtype"], rng, int(np.prod(dense["shape"], dtype=np.int64))
            )
        for sparse in parse["sparse"]:
            features[sparse["key"]] = _feature(tf, sparse["dtype"], rng, int(rng.integers(0, 4)))
        example = tf.train.Example(features=tf.train.Features(feature=features))
        serialized.append(example.SerializeToString())
    return np.array(serialized, dtype=object)


def _feature(tf: Any, dtype: str, rng: np.random.Generator, size: int) -> Any:
    if dtype == "DT_FLOAT":
        return tf.train.Feature(float_list=tf.train.FloatList(value=rng.standard_normal(size)))
    if dtype == "DT_INT64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=rng.integers(0, 5, size)))
    words = [f"word {i}".encode() for i in rng.integers(0, 5, size)]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=words))


def tensorflow_parse(parse: Mapping[str, Any], serialized: np.ndarray) -> dict[str, np.ndarray]:
    """Graph input name → tensor, as TensorFlow's parse_example gives it under the spec."""
    import tensorflow as tf

    config: dict[str, Any] = {}
    for dense in parse["dense"]:
        default = dense["default"]
        if default is not None and dense["dtype"] == "DT_STRING":
            default = [base64.b64decode(v) for v in default]
        if default is not None:
            default = np.array(default, dtype=object if dense["dtype"] == "DT_STRING" else None)
            default = default.reshape(dense["shape"])
        config[dense["key"]] = tf.io.FixedLenFeature(
            dense["shape"], _DTYPES[dense["dtype"]], default_value=default
        )
    for sparse in parse["sparse"]:
        config[sparse["key"]] = tf.io.VarLenFeature(_DTYPES[sparse["dtype"]])
    parsed = tf.io.parse_example(tf.constant(serialized, tf.string), config)
    feeds = {d["name"]: parsed[d["key"]].numpy() for d in parse["dense"] if d["name"]}
    for sparse in parse["sparse"]:
        value = parsed[sparse["key"]]
        for part, array in (("indices", value.indices), ("values", value.values),
                            ("dense_shape", value.dense_shape)):
            if sparse[part]:
                feeds[sparse[part]] = array.numpy()
    return feeds
