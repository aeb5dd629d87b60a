"""ModelSpec ⇄ the core's ModelRef."""

from __future__ import annotations

from typing import Protocol

from onnx_serving.protos.tensorflow_serving.apis import model_pb2
from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.serving.core import ModelRef


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


def fill_spec(
    spec: model_pb2.ModelSpec, name: str, version: int, signature_name: str | None = None
) -> None:
    spec.name = name
    spec.version.value = version
    if signature_name is not None:
        spec.signature_name = signature_name
