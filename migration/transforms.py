"""Optional rewrites of a converted model, each checked by the same validation afterwards.

- optimize: ONNX Runtime's offline graph optimization, saved as the model, so
  the server skips it at load. Level "extended" keeps the file portable across
  machines (the "all" level may bake in this CPU's layouts).
- quantize dynamic: int8 weights (onnxruntime.quantization), for CPU serving.
- fp16: float16 weights and compute for GPUs, inputs and outputs kept as they
  were so clients send and receive the same dtypes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort


def optimize(model: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        optimized = Path(scratch) / model.name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        shutil.move(str(optimized), model)


def quantize_dynamic(model: Path) -> None:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as quantize

    with tempfile.TemporaryDirectory() as scratch:
        quantized = Path(scratch) / model.name
        quantize(str(model), str(quantized), weight_type=QuantType.QInt8)
        shutil.move(str(quantized), model)


def to_fp16(model: Path) -> None:
    from onnxconverter_common import float16

    converted = float16.convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
    onnx.save(converted, str(model))
