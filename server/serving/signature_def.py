"""Signatures as TensorFlow's SignatureDef: what metadata shows (gRPC and REST) and what
TF Serving's messages about a signature quote."""

from __future__ import annotations

from collections.abc import Mapping

from onnx_serving.codec.tensors import datatype_of
from onnx_serving.protos.tensorflow.core.protobuf import meta_graph_pb2
from onnx_serving.protos.tensorflow_serving.apis import get_model_metadata_pb2
from onnx_serving.server.runtime.graph import Shape
from onnx_serving.server.runtime.signature import Signature, TensorSpec

SIGNATURE_DEF = "signature_def"


def signature_def_map(
    signatures: Mapping[str, Signature],
) -> get_model_metadata_pb2.SignatureDefMap:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in signatures.items():
        signature_map.signature_def[name].CopyFrom(signature_def(signature))
    return signature_map


def signature_def(signature: Signature) -> meta_graph_pb2.SignatureDef:
    message = meta_graph_pb2.SignatureDef(method_name=signature.method_name)
    for alias, spec in signature.inputs.items():
        _fill_tensor_info(message.inputs[alias], spec)
    for alias, spec in signature.outputs.items():
        _fill_tensor_info(message.outputs[alias], spec)
    return message


def _fill_tensor_info(info: meta_graph_pb2.TensorInfo, spec: TensorSpec) -> None:
    info.name = spec.name
    info.dtype = datatype_of(spec.dtype)  # type: ignore[assignment]
    _fill_shape(info, spec.declared_shape)


def _fill_shape(info: meta_graph_pb2.TensorInfo, shape: Shape) -> None:
    if shape is None:
        info.tensor_shape.unknown_rank = True
        return
    info.tensor_shape.SetInParent()
    for dim in shape:
        info.tensor_shape.dim.add(size=-1 if dim is None else dim)
