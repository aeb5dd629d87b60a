"""Fills a ModelSpec: the one filler for requests, responses and logged records."""

from __future__ import annotations

from onnx_serving.protos.tensorflow_serving.apis import model_pb2


def fill_spec(
    spec: model_pb2.ModelSpec,
    name: str,
    *,
    version: int | None = None,
    label: str | None = None,
    signature: str | None = None,
) -> None:
    """A version or a label (one at most), as a request asks or a response echoes."""
    if version is not None and label is not None:
        raise ValueError("give a version or a label, not both")
    spec.name = name
    if signature is not None:
        spec.signature_name = signature
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
