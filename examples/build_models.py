"""Builds the bundled example repository with onnx.helper.

    python examples/build_models.py [OUTPUT_DIR]   # default: examples/models

half_plus_two is the model of TF Serving's tutorial and tests, with the five
signatures of its TF1 export (saved_model_half_plus_two.py): Predict's
``serving_default`` (x → y = 0.5 * x + 2), Classify's ``classify_x_to_y`` and
Regress's ``regress_x_to_y`` and ``regress_x_to_y2`` (y2 = 0.5 * x + 3) over
serialized tf.Example, which the server parses (features x, required, and x2,
default 0), and ``regress_x2_to_y3`` (x2 → y3 = 0.5 * x2 + 3). Tensor names
are the SavedModel's, so metadata matches TF Serving's
half_plus_two_model_metadata.json. half_plus_three gives 0.5 * x + 3 (Predict
only). As in TF Serving's SavedModel, the signatures declare shape [-1, 1]
while the graphs take x of any shape, so [1], [3] and [2, 2] work too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
VERSION = 123
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def affine(name: str, inputs: str, outputs: dict[str, float]) -> onnx.ModelProto:
    """``output = 0.5 * inputs + offset`` for each output and its offset."""
    nodes = [helper.make_node("Mul", [inputs, "half"], ["half_x"])]
    initializers = [numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    for output, offset in outputs.items():
        nodes.append(helper.make_node("Add", ["half_x", f"{output}_offset"], [output]))
        initializers.append(
            numpy_helper.from_array(np.array(offset, np.float32), f"{output}_offset")
        )
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(inputs, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None) for output in outputs],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnx-serving"
    )
    # No onnx.checker here: it insists on a rank for graph inputs, which this
    # model deliberately leaves open (ONNX Runtime accepts it).
    model.ir_version = 8
    return model


def _tensor(name: str, dtype: str = "DT_FLOAT", shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "tensor_shape": [-1, 1] if shape is None else shape}


# The examples input: DT_STRING of unknown rank, as TF's tf_example placeholder.
_EXAMPLES = {"inputs": {"name": "tf_example:0", "dtype": "DT_STRING", "tensor_shape": None}}
# TF's feature spec: x required, x2 defaulting to 0; both checked for every example.
_PARSE = {
    "input": "inputs",
    "dense": [
        {"key": "x", "dtype": "DT_FLOAT", "shape": [1], "default": None, "name": "x:0"},
        {"key": "x2", "dtype": "DT_FLOAT", "shape": [1], "default": [0.0], "name": None},
    ],
}

HALF_PLUS_TWO = {
    "signature_def": {
        "serving_default": {
            "method_name": PREDICT,
            "inputs": {"x": _tensor("x:0")},
            "outputs": {"y": _tensor("y:0")},
        },
        "classify_x_to_y": {
            "method_name": CLASSIFY,
            "inputs": _EXAMPLES,
            "outputs": {"scores": _tensor("y:0")},
            "parse_example": _PARSE,
        },
        "regress_x_to_y": {
            "method_name": REGRESS,
            "inputs": _EXAMPLES,
            "outputs": {"outputs": _tensor("y:0")},
            "parse_example": _PARSE,
        },
        "regress_x_to_y2": {
            "method_name": REGRESS,
            "inputs": _EXAMPLES,
            "outputs": {"outputs": _tensor("y2:0")},
            "parse_example": _PARSE,
        },
        "regress_x2_to_y3": {
            "method_name": REGRESS,
            "model_file": "x2_to_y3.onnx",
            "inputs": {"inputs": _tensor("x2:0")},
            "outputs": {"outputs": _tensor("y3:0")},
        },
    }
}

HALF_PLUS_THREE = {
    "signature_def": {
        "serving_default": {
            "method_name": PREDICT,
            "inputs": {"x": _tensor("x")},
            "outputs": {"y": _tensor("y")},
        }
    }
}


def build(out: Path) -> list[Path]:
    files = {
        out / "half_plus_two" / str(VERSION): {
            "model.onnx": affine("half_plus_two", "x:0", {"y:0": 2.0, "y2:0": 3.0}),
            "x2_to_y3.onnx": affine("x2_to_y3", "x2:0", {"y3:0": 3.0}),
            "signatures.json": HALF_PLUS_TWO,
        },
        out / "half_plus_three" / str(VERSION): {
            "model.onnx": affine("half_plus_3", "x", {"y": 3.0}),
            "signatures.json": HALF_PLUS_THREE,
        },
    }
    written = []
    for version_dir, contents in files.items():
        version_dir.mkdir(parents=True, exist_ok=True)
        for name, content in contents.items():
            path = version_dir / name
            if isinstance(content, onnx.ModelProto):
                path.write_bytes(content.SerializeToString())
            else:
                path.write_text(json.dumps(content, indent=2) + "\n")
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "models"
    for path in build(target):
        print(path)
