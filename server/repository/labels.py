"""Version labels: TF Serving's rule for which labels a model may be given.

A label must name a version the model serves and means to keep, unless
--allow_version_labels_for_unavailable_models and the label is new or unmoved
(server_core.cc, ServerCore::UpdateModelVersionLabelMap).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from onnx_serving.server.errors import FailedPrecondition


@dataclass(frozen=True)
class LabelError:
    label: str
    error: FailedPrecondition


def refused_labels(
    name: str, labels: Mapping[str, int], *, available: Iterable[int],
    current: Mapping[str, int], allow_unavailable: bool, replaced: Iterable[int] = (),
) -> list[LabelError]:
    """The labels of model ``name`` the rule refuses, given the versions ``available`` to
    labels and the labels it has now. ``replaced``: versions that serve only until one
    their policy wants loads (a label on one would then name a version gone)."""
    available, replaced = set(available), set(replaced)
    return [
        LabelError(label, FailedPrecondition(
            f"Request to assign label to version {version} of model {name}, which "
            + ("serves only until a version its policy wants loads: label a version the "
               "policy keeps" if version in replaced
               else "is not currently available for inference")
        ))
        for label, version in labels.items()
        if version not in available
        and not (allow_unavailable and current.get(label) in (None, version))
    ]
