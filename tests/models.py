"""Small real ONNX models for the tests, made with onnx.helper."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# ONNX type, TF dtype name, numpy dtype name: every type the server moves.
DTYPES = [
    (TensorProto.FLOAT, "DT_FLOAT", "float32"),
    (TensorProto.DOUBLE, "DT_DOUBLE", "float64"),
    (TensorProto.FLOAT16, "DT_HALF", "float16"),
    (TensorProto.BFLOAT16, "DT_BFLOAT16", "bfloat16"),
    (TensorProto.FLOAT8E4M3FN, "DT_FLOAT8_E4M3FN", "float8_e4m3fn"),
    (TensorProto.FLOAT8E5M2, "DT_FLOAT8_E5M2", "float8_e5m2"),
    (TensorProto.INT8, "DT_INT8", "int8"),
    (TensorProto.INT16, "DT_INT16", "int16"),
    (TensorProto.INT32, "DT_INT32", "int32"),
    (TensorProto.INT64, "DT_INT64", "int64"),
    (TensorProto.UINT8, "DT_UINT8", "uint8"),
    (TensorProto.UINT16, "DT_UINT16", "uint16"),
    (TensorProto.UINT32, "DT_UINT32", "uint32"),
    (TensorProto.UINT64, "DT_UINT64", "uint64"),
    (TensorProto.BOOL, "DT_BOOL", "bool"),
    (TensorProto.STRING, "DT_STRING", "object"),
]


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], initializers=(), opset=21):
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def identity(elem_type: int, shape: list[Any] | None = None) -> onnx.ModelProto:
    return _model(
        [helper.make_node("Identity", ["input"], ["output"])],
        [helper.make_tensor_value_info("input", elem_type, shape)],
        [helper.make_tensor_value_info("output", elem_type, shape)],
    )


def add_constant(value: float) -> onnx.ModelProto:
    """y = x + value, x float32 of shape [batch, 1]."""
    return _model(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.array(value, np.float32), "c")],
    )


def two_outputs() -> onnx.ModelProto:
    """a: float [n, 3], b: int64 [n] → sum = a + 1 (float), twice = b * 2 (int64)."""
    return _model(
        [
            helper.make_node("Add", ["a", "one"], ["sum"]),
            helper.make_node("Mul", ["b", "two"], ["twice"]),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["n"]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("twice", TensorProto.INT64, ["n"]),
        ],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(2, np.int64), "two"),
        ],
    )


def classifier() -> onnx.ModelProto:
    """x: float [n, 1] → outputs of every shape and type Classify and Regress may meet.

    scores2 [n, 2] = (x, 2x), labels2 the same as strings, labels3 [n, 3] strings,
    scores_1d [n], scores_double [n, 1] float64, ints [n, 1] int64, short [1, 1] (the
    first row only); z (a second, optional input) → z_out.
    """
    const = numpy_helper.from_array
    return _model(
        [
            helper.make_node("Mul", ["x", "two"], ["twice"]),
            helper.make_node("Concat", ["x", "twice"], ["scores2"], axis=1),
            helper.make_node("Cast", ["scores2"], ["labels2"], to=TensorProto.STRING),
            helper.make_node("Concat", ["x", "twice", "x"], ["three"], axis=1),
            helper.make_node("Cast", ["three"], ["labels3"], to=TensorProto.STRING),
            helper.make_node("Squeeze", ["x", "axis1"], ["scores_1d"]),
            helper.make_node("Cast", ["x"], ["scores_double"], to=TensorProto.DOUBLE),
            helper.make_node("Cast", ["x"], ["ints"], to=TensorProto.INT64),
            helper.make_node("Slice", ["x", "zero", "one", "zero"], ["short"]),
            helper.make_node("Identity", ["z"], ["z_out"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 1]),
        ],
        [
            helper.make_tensor_value_info("scores2", TensorProto.FLOAT, ["n", 2]),
            helper.make_tensor_value_info("labels2", TensorProto.STRING, ["n", 2]),
            helper.make_tensor_value_info("labels3", TensorProto.STRING, ["n", 3]),
            helper.make_tensor_value_info("scores_1d", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("scores_double", TensorProto.DOUBLE, ["n", 1]),
            helper.make_tensor_value_info("ints", TensorProto.INT64, ["n", 1]),
            helper.make_tensor_value_info("short", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("z_out", TensorProto.FLOAT, ["n", 1]),
        ],
        [
            const(np.array(2.0, np.float32), "two"),
            const(np.array([1], np.int64), "axis1"),
            const(np.array([0], np.int64), "zero"),
            const(np.array([1], np.int64), "one"),
            const(np.zeros((1, 1), np.float32), "z"),  # optional: only two_inputs feeds it
        ],
    )


# Classify/Regress signatures over classifier(): alias → its graph output. Each parses
# serialized tf.Example (feature x, float [1]) into x on the server.
CLASSIFIER_SIGNATURES = {
    "classify_both": ("tensorflow/serving/classify", {"classes": "labels2", "scores": "scores2"}),
    "classify_labels": ("tensorflow/serving/classify", {"classes": "labels2"}),
    "classify_scores": ("tensorflow/serving/classify", {"scores": "scores2"}),
    "classify_mismatch": ("tensorflow/serving/classify",
                          {"classes": "labels3", "scores": "scores2"}),
    "classify_1d": ("tensorflow/serving/classify", {"scores": "scores_1d"}),
    "classify_double": ("tensorflow/serving/classify", {"scores": "scores_double"}),
    "classify_float_classes": ("tensorflow/serving/classify", {"classes": "scores2"}),
    "classify_short": ("tensorflow/serving/classify", {"scores": "short"}),
    "classify_unnamed": ("tensorflow/serving/classify", {"probabilities": "scores2"}),
    "classify_three": ("tensorflow/serving/classify",
                       {"classes": "labels2", "scores": "scores2", "extra": "ints"}),
    "regress_1d": ("tensorflow/serving/regress", {"outputs": "scores_1d"}),
    "regress_wide": ("tensorflow/serving/regress", {"outputs": "scores2"}),
    "regress_int": ("tensorflow/serving/regress", {"outputs": "ints"}),
    "regress_short": ("tensorflow/serving/regress", {"outputs": "short"}),
    "regress_unnamed": ("tensorflow/serving/regress", {"y": "scores_1d"}),
    "predict_method": ("tensorflow/serving/predict", {"scores": "scores2"}),
}


def classifier_signatures() -> dict[str, Any]:
    parse = {"input": "inputs",
             "dense": [{"key": "x", "dtype": "DT_FLOAT", "shape": [1], "default": None,
                        "name": "x"}]}
    signatures: dict[str, Any] = {
        name: {
            "method_name": method,
            "inputs": {"inputs": {"name": "tf_example:0", "dtype": "DT_STRING"}},
            "outputs": {alias: {"name": output} for alias, output in outputs.items()},
            "parse_example": parse,
        }
        for name, (method, outputs) in CLASSIFIER_SIGNATURES.items()
    }
    # Predict-style: two plain inputs, and one plain input not named "inputs".
    signatures["two_inputs"] = {
        "inputs": {"inputs": {"name": "x"}, "z": {"name": "z"}},
        "outputs": {"scores": {"name": "scores2"}, "z": {"name": "z_out"}},
    }
    signatures["x_input"] = {
        "inputs": {"x": {"name": "x"}},
        "outputs": {"outputs": {"name": "scores_1d"}},
    }
    signatures["serving_default"] = {
        "inputs": {"x": {"name": "x"}, "z": {"name": "z"}},
        "outputs": {"scores": {"name": "scores2"}},
    }
    return signatures


def _write(version_dir: Path, files: dict[str, onnx.ModelProto], signatures: dict | None) -> None:
    version_dir.mkdir(parents=True, exist_ok=True)
    for name, model in files.items():
        (version_dir / name).write_bytes(model.SerializeToString())
    if signatures is not None:
        (version_dir / "signatures.json").write_text(json.dumps({"signature_def": signatures}))


def build_repository(root: Path) -> Path:
    """Writes every test model under ``root`` and a config file serving them; returns its path."""
    for name in ("half_plus_two", "half_plus_three"):
        shutil.copytree(EXAMPLES / "models" / name, root / name)

    # One signature per dtype, each an Identity in its own file.
    files = {f"{np_name}.onnx": identity(onnx_type) for onnx_type, _, np_name in DTYPES}
    signatures = {
        np_name: {
            "model_file": f"{np_name}.onnx",
            "inputs": {"input": {"name": "input", "dtype": tf_name}},
            "outputs": {"output": {"name": "output", "dtype": tf_name}},
        }
        for _, tf_name, np_name in DTYPES
    }
    signatures["serving_default"] = signatures["float32"]
    _write(root / "dtypes" / "1", files, signatures)

    for version in (1, 2, 3):
        _write(root / "versions" / str(version), {"model.onnx": add_constant(version)}, None)

    # Aliases differ from the graph's names, as a converted SavedModel's would.
    _write(
        root / "multi" / "7",
        {"model.onnx": two_outputs()},
        {
            "serving_default": {
                "inputs": {"floats": {"name": "a"}, "ints": {"name": "b"}},
                "outputs": {"plus_one": {"name": "sum"}, "doubled": {"name": "twice"}},
            },
            "doubler": {
                "inputs": {"floats": {"name": "a"}, "ints": {"name": "b"}},
                "outputs": {"doubled": {"name": "twice"}},
            },
        },
    )

    _write(root / "classifier" / "1", {"model.onnx": classifier()}, classifier_signatures())

    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx model")

    config = root / "models.config"
    config.write_text(
        """
model_config_list {
  config { name: "half_plus_two" base_path: "half_plus_two" model_platform: "onnx" }
  config { name: "half_plus_three" base_path: "half_plus_three" model_platform: "onnx" }
  config { name: "dtypes" base_path: "dtypes" model_platform: "onnx" }
  config { name: "multi" base_path: "multi" model_platform: "onnx" }
  config { name: "classifier" base_path: "classifier" model_platform: "onnx" }
  config { name: "broken" base_path: "broken" model_platform: "onnx" }
  config {
    name: "versions"
    base_path: "versions"
    model_platform: "onnx"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
    version_labels { key: "gone" value: 9 }
  }
}
"""
    )
    return config
