"""ModelSpec ⇄ the core: a request's ModelRef, and the spec of what answered.

The filling itself is ``codec.model_spec.fill_spec``, which the client shares.
"""

from __future__ import annotations

from typing import Protocol

from onnx_serving.codec.model_spec import fill_spec
from onnx_serving.protos.tensorflow_serving.apis import model_pb2
from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.serving.core import ModelRef
from onnx_serving.server.serving.predict import Served


class HasModelSpec(Protocol):
    @property
    def model_spec(self) -> model_pb2.ModelSpec: ...

    def HasField(self, field_name: str) -> bool: ...


def checked_spec(request: HasModelSpec) -> model_pb2.ModelSpec:
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    return request.model_spec


def model_ref(spec: model_pb2.ModelSpec) -> ModelRef:
    """TF Serving's ServableRequestFromModelSpec."""
    if not spec.name:
        raise InvalidArgument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version_label":
        return ModelRef(spec.name, label=spec.version_label)
    if choice == "version":
        return ModelRef(spec.name, version=spec.version.value)
    return ModelRef(spec.name)


def fill_served(spec: model_pb2.ModelSpec, served: Served) -> None:
    """The version and signature that answered, as every response and log record names them."""
    fill_spec(spec, served.name, version=served.version, signature=served.signature)
