"""The server's tf.Example parse stage against TensorFlow's own parse_example, in-process."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from onnx import TensorProto, helper, numpy_helper

from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.example_parse import read_parse_spec
from onnx_serving.server.runtime.model import load

# feature key → (TensorFlow's feature config, its signatures.json entry)
FEATURES = {
    "x": (tf.io.FixedLenFeature([1], tf.float32),
          {"dtype": "DT_FLOAT", "shape": [1], "default": None}),
    "pair": (tf.io.FixedLenFeature([2], tf.int64, default_value=[7, 8]),
             {"dtype": "DT_INT64", "shape": [2], "default": [7, 8]}),
    "grid": (tf.io.FixedLenFeature([2, 2], tf.float32, default_value=[[0, 1], [2, 3]]),
             {"dtype": "DT_FLOAT", "shape": [2, 2], "default": [0, 1, 2, 3]}),
    "word": (tf.io.FixedLenFeature([], tf.string, default_value="none"),
             {"dtype": "DT_STRING", "shape": [], "default": [base64.b64encode(b"none").decode()]}),
}
VAR_LEN = {"scores": tf.float32, "tags": tf.string, "ids": tf.int64}
_DTYPE_NAMES = {tf.float32: "DT_FLOAT", tf.string: "DT_STRING", tf.int64: "DT_INT64"}


def spec_json() -> dict[str, object]:
    return {
        "input": "examples",
        "dense": [{"key": k, "name": f"dense_{k}", **entry} for k, (_, entry) in FEATURES.items()],
        "sparse": [{"key": k, "dtype": _DTYPE_NAMES[d], "indices": f"{k}_indices",
                    "values": f"{k}_values", "dense_shape": f"{k}_shape"}
                   for k, d in VAR_LEN.items()],
    }


def example(**features: list) -> bytes:
    feature = {}
    for key, values in features.items():
        if values and isinstance(values[0], bytes):
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif values and isinstance(values[0], int):
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def tensorflow_parse(serialized: np.ndarray) -> dict[str, np.ndarray]:
    config = {k: f for k, (f, _) in FEATURES.items()}
    config.update({k: tf.io.VarLenFeature(d) for k, d in VAR_LEN.items()})
    parsed = tf.io.parse_example(tf.constant(serialized, tf.string), config)
    out = {f"dense_{k}": parsed[k].numpy() for k in FEATURES}
    for k in VAR_LEN:
        out[f"{k}_indices"] = parsed[k].indices.numpy()
        out[f"{k}_values"] = parsed[k].values.numpy()
        out[f"{k}_shape"] = parsed[k].dense_shape.numpy()
    return out


BATCH = np.array([
    example(x=[1.5], pair=[1, 2], grid=[1.0, 2.0, 3.0, 4.0], word=[b"\xff\x00raw"],
            scores=[0.5, 0.25], tags=[b"a", b"\xfe"], ids=[3]),
    example(x=[-2.0]),
    example(x=[0.0], scores=[1.0, 2.0, 3.0], ids=[1, 2, 3, 4]),
], dtype=object)


@pytest.mark.parametrize("serialized",
                         [BATCH, BATCH[:1], BATCH[1:2], BATCH[:0], BATCH[:1].reshape(())],
                         ids=["three", "one", "defaults", "empty", "scalar"])
def test_parse_gives_tensorflows_tensors(serialized: np.ndarray) -> None:
    ours = read_parse_spec(spec_json(), "test").parse(serialized)
    theirs = tensorflow_parse(serialized)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        got = ours[name]
        expected = np.asarray(value, dtype=object if isinstance(value, bytes) else None)
        assert got.shape == expected.shape, name
        if expected.dtype == object:
            assert got.tolist() == expected.tolist(), name
        else:
            assert got.dtype == expected.dtype, name
            np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("serialized", [
    [example(pair=[1, 2])],  # x is required
    [example(x=[1.0]), example(x=[1.0, 2.0])],  # too many values
    [example(x=[1])],  # int64 where float is expected
    [example(x=[1.0], tags=[1])],  # a var-len feature of the wrong type
    [b"\x0a\x03abc"],  # not an Example
    [[example(x=[1.0])]],  # a matrix
], ids=["missing", "count", "dtype", "sparse-dtype", "garbage", "matrix"])
def test_bad_examples_are_refused_with_tensorflows_message(serialized: list) -> None:
    array = np.array(serialized, dtype=object)
    with pytest.raises(tf.errors.InvalidArgumentError) as theirs:
        tensorflow_parse(array)
    with pytest.raises(InvalidArgument) as ours:
        read_parse_spec(spec_json(), "test").parse(array)
    assert ours.value.message.split(", value:")[0] in theirs.value.message


def test_loaded_model_parses_its_examples_input(tmp_path: Path) -> None:
    """The path Classify, Regress and Predict share: one DT_STRING input of serialized
    Examples under the signature's alias, parsed into the graph's feeds."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["parsed_x", "half"], ["half_x"]),
         helper.make_node("Add", ["half_x", "two"], ["y"])],
        "half_plus_two",
        [helper.make_tensor_value_info("parsed_x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    (tmp_path / "signatures.json").write_text(json.dumps({"signature_def": {"regress": {
        "method_name": "tensorflow/serving/regress",
        "inputs": {"inputs": {"name": "tf_example:0", "dtype": "DT_STRING",
                              "tensor_shape": None}},
        "outputs": {"outputs": {"name": "y", "dtype": "DT_FLOAT", "tensor_shape": [-1, 1]}},
        "parse_example": {"input": "inputs", "dense": [
            {"key": "x", "dtype": "DT_FLOAT", "shape": [1], "name": "parsed_x"},
            {"key": "x2", "dtype": "DT_FLOAT", "shape": [1], "default": [0.0], "name": None},
        ]},
    }}}))
    loaded = load(tmp_path, RuntimeConfig())
    signature = loaded.signatures["regress"]
    assert signature.inputs["inputs"].declared_shape is None
    serialized = np.array([example(x=[1.0]), example(x=[3.0], x2=[5.0])], dtype=object)
    with loaded.predict(signature, {"inputs": serialized}) as outputs:
        np.testing.assert_array_equal(outputs["outputs"], [[2.5], [3.5]])
    with pytest.raises(InvalidArgument, match=r"Feature: x .* is required"), \
            loaded.predict(signature, {"inputs": np.array([example(x2=[1.0])], dtype=object)}):
        pass
    with pytest.raises(InvalidArgument, match="Data type: int64 but expected type: float"), \
            loaded.predict(signature, {"inputs": np.array([example(x=[1.0], x2=[1])], object)}):
        pass
    loaded.close()
