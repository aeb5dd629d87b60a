"""What an ONNX file's graph takes and gives, read with the onnx package.

ONNX Runtime reports an input of unknown rank and a scalar input alike (as
``[]``), so the graph's own type information is read instead. An input whose
images are decoded before the graph (server/runtime/images.py) is described as
what clients send: DT_STRING, a vector of encoded images or one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from onnx_serving.server.errors import Code, ModelLoadError
from onnx_serving.server.runtime.dtypes import NUMPY_BY_ONNX
from onnx_serving.server.runtime.extensions import domains_used
from onnx_serving.server.runtime.images import ImageDecoding, read_decodings

# None: unknown rank. A None dimension: any size.
Shape: TypeAlias = tuple[int | None, ...] | None


@dataclass(frozen=True)
class Graph:
    file: str
    inputs: dict[str, tuple[np.dtype, Shape]]
    # Inputs without an initializer: a request must feed them.
    required_inputs: dict[str, tuple[np.dtype, Shape]]
    outputs: dict[str, tuple[np.dtype, Shape]]
    # Inputs that take images decoded from the DT_STRING clients send.
    decodings: dict[str, ImageDecoding] = field(default_factory=dict)
    # onnxruntime-extensions' domains its nodes use (their library is loaded for them).
    extension_domains: set[str] = field(default_factory=set)


def read_graph(path: Path) -> Graph:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise ModelLoadError(f"cannot read ONNX model {path}: {exc}") from exc
    except DecodeError as exc:
        message = f"cannot parse {path} as an ONNX model: {exc}"
        raise ModelLoadError(message, Code.DATA_LOSS) from exc
    graph = model.graph
    initialized = {init.name for init in graph.initializer}
    decodings = read_decodings({p.key: p.value for p in model.metadata_props}, path.name)
    inputs = {
        v.name: _encoded_images(decodings[v.name]) if v.name in decodings
        else _tensor_type(v, path)
        for v in graph.input
    }
    required = {name: info for name, info in inputs.items() if name not in initialized}
    outputs = {v.name: _tensor_type(v, path) for v in graph.output}
    return Graph(path.name, inputs, required, outputs, decodings, domains_used(model))


def _encoded_images(decoding: ImageDecoding) -> tuple[np.dtype, Shape]:
    return np.dtype(object), (None,) if decoding.batched else ()


def _tensor_type(value: onnx.ValueInfoProto, path: Path) -> tuple[np.dtype, Shape]:
    if value.type.WhichOneof("value") != "tensor_type":
        raise ModelLoadError(f"{path.name}: '{value.name}' is not a tensor; only tensors serve")
    tensor = value.type.tensor_type
    dtype = NUMPY_BY_ONNX.get(tensor.elem_type)
    if dtype is None:
        type_name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise ModelLoadError(f"{path.name}: '{value.name}' has unsupported type {type_name}")
    if not tensor.HasField("shape"):
        return dtype, None
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
    return dtype, dims
