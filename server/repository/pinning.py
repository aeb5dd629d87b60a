"""Which version answers a request: by label, by number, or the highest available.

TF Serving's ServableHandle: the version found is pinned (its ``in_flight``
count raised) so that it is not unloaded while the request uses it; the
manager's ``acquire`` lets it go when the request ends.
"""

from __future__ import annotations

from typing import TypeVar

from onnx_serving.server.errors import InvalidArgument, ServableNotFound
from onnx_serving.server.repository.transitions import State
from onnx_serving.server.repository.versions import ModelEntry, VersionEntry

S = TypeVar("S")


def pin(
    model: ModelEntry[S] | None, name: str, version: int | None, label: str | None
) -> VersionEntry[S]:
    """The version of ``model`` (named ``name``; None when unknown) that answers, pinned.
    The caller holds the manager's lock."""
    if model is not None and model.removed:
        model = None
    if label is not None:
        labelled = model.config.labels.get(label) if model else None
        if labelled is None:
            raise InvalidArgument(f"Unrecognized servable version label: {label}")
        version = labelled
    if model is not None:
        available = model.available()
        if version is None and available:
            version = max(available)
        entry = model.versions.get(version) if version is not None else None
        if entry is not None and entry.state is State.AVAILABLE:
            entry.in_flight += 1
            return entry
    raise ServableNotFound(name, version)
