"""A light TensorFlow Serving client: grpcio, numpy and protobuf, no TensorFlow."""

from __future__ import annotations

from onnx_serving.client.client import Client, ServingError, SignatureDef, VersionStatus
from onnx_serving.codec.tensors import TensorCodecError, make_ndarray, make_tensor_proto

__all__ = [
    "Client",
    "ServingError",
    "SignatureDef",
    "TensorCodecError",
    "VersionStatus",
    "make_ndarray",
    "make_tensor_proto",
]
