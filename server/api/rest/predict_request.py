"""A :predict body → its input tensors, in row ("instances") or columnar ("inputs") format.

Follows TF Serving's FillPredictRequestFromJson (util/json_tensor.cc), its
checks in its order and its messages. Rows are first converted as one
tensor per input (fast); only a batch that fails that is walked row by row,
which finds the first bad row and words the error as TF does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from onnx_serving.server.api.rest.json_to_tensor import (
    Shape,
    build,
    dense_shape,
    exact_leaves,
    fast_tensor,
    is_base64_object,
    rule_for,
    to_tensor,
)
from onnx_serving.server.api.rest.rapidjson_compat import debug_string
from onnx_serving.server.errors import InvalidArgument, ServingError

SIGNATURE_KEY: Final = "signature_name"
INSTANCES_KEY: Final = "instances"
INPUTS_KEY: Final = "inputs"


@dataclass(frozen=True)
class PredictInputs:
    columnar: bool  # the response mirrors the request's format
    tensors: dict[str, np.ndarray]


def signature_name(document: Mapping[str, Any]) -> str:
    value = document.get(SIGNATURE_KEY, "")
    if not isinstance(value, str):
        raise InvalidArgument(
            f"JSON Value: {debug_string(document)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return value


def read_inputs(document: Mapping[str, Any], dtypes: Mapping[str, np.dtype]) -> PredictInputs:
    """``dtypes``: the signature's inputs by alias."""
    if INSTANCES_KEY in document:
        if INPUTS_KEY in document:
            raise _format_error(
                document,
                f"Not formatted correctly expecting only one of '{INPUTS_KEY}' or "
                f"'{INSTANCES_KEY}' keys to exist ",
            )
        instances = document[INSTANCES_KEY]
        if not isinstance(instances, list):
            raise _format_error(document, f"Expecting '{INSTANCES_KEY}' to be an list/array")
        if not instances:
            raise _format_error(document, f"No values in '{INSTANCES_KEY}' array")
        return PredictInputs(False, _rows(instances, dtypes))
    if INPUTS_KEY in document:
        return PredictInputs(True, _columns(document[INPUTS_KEY], dtypes))
    raise InvalidArgument(f"Missing '{INPUTS_KEY}' or '{INSTANCES_KEY}' key")


def _format_error(document: Mapping[str, Any], message: str) -> InvalidArgument:
    return InvalidArgument(f"JSON Value: {debug_string(document)} {message}")


def _columns(value: Any, dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or is_base64_object(value):
        if len(dtypes) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        (name, dtype), = dtypes.items()
        return {name: to_tensor(value, dtype)}
    tensors = {}
    for name in sorted(dtypes):
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in '{INPUTS_KEY}' object.")
        tensors[name] = to_tensor(value[name], dtypes[name])
    return tensors


def _is_named(element: Any) -> bool:
    """A row that names its inputs: an object that is not a base64 string."""
    return isinstance(element, dict) and not is_base64_object(element)


def _rows(instances: list[Any], dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    named = _is_named(instances[0])
    tensors = _fast_rows(instances, dtypes, named)
    return tensors if tensors is not None else _exact_rows(instances, dtypes, named)


def _fast_rows(
    instances: list[Any], dtypes: Mapping[str, np.dtype], named: bool
) -> dict[str, np.ndarray] | None:
    """Each input's rows as one tensor, if every row is well formed; else None."""
    if not named:
        name = next(iter(dtypes))
        array = fast_tensor(instances, dense_shape(instances), rule_for(dtypes[name]))
        return None if array is None else {name: array}
    names = dtypes.keys()
    if not all(_is_named(row) and row.keys() == names for row in instances):
        return None
    tensors = {}
    for name, dtype in dtypes.items():
        column = [row[name] for row in instances]
        array = fast_tensor(column, dense_shape(column), rule_for(dtype))
        if array is None:
            return None
        tensors[name] = array
    return tensors


@dataclass
class _Batch:
    """One input's rows so far, as TF's AddInstanceItem keeps them."""

    shape: Shape
    size: int
    leaves: list[Any] = field(default_factory=list)


def _exact_rows(
    instances: list[Any], dtypes: Mapping[str, np.dtype], named: bool
) -> dict[str, np.ndarray]:
    batches: dict[str, _Batch] = {}
    for index, row in enumerate(instances):
        if named:
            if not _is_named(row):
                raise InvalidArgument(
                    f"Expecting object but got list at item {index} of input list"
                )
            for key, item in row.items():
                try:
                    _add_item(item, key, dtypes, batches)
                except ServingError as exc:
                    raise InvalidArgument(
                        f"Failed to process element: {index} key: {key} of '{INSTANCES_KEY}' "
                        f"list. Error: {_status_text(exc)}"
                    ) from None
            if row.keys() != dtypes.keys():
                raise InvalidArgument(
                    f"Failed to process element: {index} of '{INSTANCES_KEY}' list. "
                    f"JSON object: {debug_string(row)} keys must be equal to: "
                    f"{','.join(sorted(dtypes))}"
                )
        else:
            if _is_named(row):
                raise InvalidArgument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                _add_item(row, next(iter(dtypes)), dtypes, batches)
            except ServingError as exc:
                raise InvalidArgument(
                    f"Failed to process element: {index} of '{INSTANCES_KEY}' list. "
                    f"Error: {_status_text(exc)}"
                ) from None
    return {
        name: build(batch.leaves, (len(instances), *batch.shape), rule_for(dtypes[name]))
        for name, batch in batches.items()
    }


def _add_item(
    item: Any, name: str, dtypes: Mapping[str, np.dtype], batches: dict[str, _Batch]
) -> None:
    if name not in dtypes:
        raise InvalidArgument(f"JSON object: does not have named input: {name}")
    shape = dense_shape(item)
    leaves = exact_leaves(item, shape, rule_for(dtypes[name]))
    batch = batches.get(name)
    if batch is None:
        batches[name] = _Batch(shape, len(leaves), leaves)
        return
    if len(leaves) != batch.size:
        raise InvalidArgument(f"Expecting tensor size: {batch.size} but got: {len(leaves)}")
    if shape != batch.shape:
        raise InvalidArgument(
            f"Expecting shape {_shape_text(batch.shape)} but got: {_shape_text(shape)}"
        )
    batch.leaves.extend(leaves)


def _shape_text(shape: Shape) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _status_text(error: ServingError) -> str:
    """absl::Status::ToString(), which TF nests in its row errors."""
    return f"{error.code.name}: {error.message}"
