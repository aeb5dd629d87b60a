"""Rewrites of a converted model: the optional ones, each checked by the same validation
afterwards, and the output names a graph cut gives back (``restore_output_names``).

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


def restore_output_names(
    model: Path, outputs: dict[str, str], wanted: dict[str, str]
) -> dict[str, str]:
    """Gives the graph outputs ``outputs`` (alias → name) the names in ``wanted`` (alias →
    the signature's own tensor, as TF Serving's metadata shows it), renaming any tensor that
    already holds such a name first; returns alias → name as the file now has them. A
    name that is a graph input, or wanted twice, stays as converted."""
    proto = onnx.load(str(model), load_external_data=False)
    graph = proto.graph
    taken = {value.name for value in graph.input}
    renames: dict[str, str] = {}
    result = dict(outputs)
    for alias, name in outputs.items():
        target = wanted.get(alias, name)
        if target == name or target in taken:
            continue
        taken.add(target)
        renames[target] = f"{target}.inner"  # the signature's tensor, inside the graph
        renames[name] = target
        result[alias] = target
    if renames:
        _rename(graph, renames)
        onnx.save(proto, str(model))
    return result


def _rename(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Every use of a tensor name, subgraphs (which may read outer names) included."""
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
        for attribute in node.attribute:
            for subgraph in (attribute.g, *attribute.graphs):
                _rename(subgraph, renames)
    for values in (graph.input, graph.output, graph.value_info):
        for value in values:
            value.name = renames.get(value.name, value.name)
    for initializer in graph.initializer:
        initializer.name = renames.get(initializer.name, initializer.name)
