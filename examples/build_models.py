"""Builds the bundled example repository with onnx.helper.

    python examples/build_models.py [OUTPUT_DIR]   # default: examples/models

half_plus_two is the model of TF Serving's tutorial and tests (y = 0.5 * x + 2,
version 123, input "x", output "y", float32); half_plus_three gives 0.5 * x + 3.
As in TF Serving's SavedModel, the signature declares shape [-1, 1] while the
graph takes x of any shape, so [1], [3] and [2, 2] work too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
VERSION = 123


def half_plus(offset: float) -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "half"], ["half_x"]),
            helper.make_node("Add", ["half_x", "offset"], ["y"]),
        ],
        f"half_plus_{offset:g}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.array(0.5, np.float32), "half"),
            numpy_helper.from_array(np.array(offset, np.float32), "offset"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnx-serving"
    )
    # No onnx.checker here: it insists on a rank for graph inputs, which this
    # model deliberately leaves open (ONNX Runtime accepts it).
    model.ir_version = 8
    return model


SIGNATURES = {
    "signature_def": {
        "serving_default": {
            "method_name": "tensorflow/serving/predict",
            "inputs": {"x": {"name": "x", "dtype": "DT_FLOAT", "tensor_shape": [-1, 1]}},
            "outputs": {"y": {"name": "y", "dtype": "DT_FLOAT", "tensor_shape": [-1, 1]}},
        }
    }
}


def build(out: Path) -> list[Path]:
    written = []
    for name, offset in (("half_plus_two", 2.0), ("half_plus_three", 3.0)):
        version_dir = out / name / str(VERSION)
        version_dir.mkdir(parents=True, exist_ok=True)
        model_path = version_dir / "model.onnx"
        model_path.write_bytes(half_plus(offset).SerializeToString())
        signature_path = version_dir / "signatures.json"
        signature_path.write_text(json.dumps(SIGNATURES, indent=2) + "\n")
        written += [model_path, signature_path]
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "models"
    for path in build(target):
        print(path)
