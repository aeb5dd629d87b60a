"""Array work for batching: which requests may share a batch, merging them, splitting results.

Each function touches every task once and every array with one numpy call
(a concatenate, a slice, a padded copy), never element by element.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from onnx_serving.server.batching._request import Task
from onnx_serving.server.errors import FailedPrecondition


def batch_key(inputs: Mapping[str, np.ndarray], pad: bool) -> tuple[int, Hashable] | None:
    """The request's rows and the queue it belongs in; None when it cannot be batched.

    Requests share a queue when their input names and dtypes match and so do
    their non-batch dimensions (with ``pad``, only their ranks). None for
    scalars, zero rows, inputs disagreeing on dimension 0, and (with ``pad``)
    empty inputs, which have no first element to pad with.
    """
    rows = -1
    parts: list[tuple[str, np.dtype, object]] = []
    for name in sorted(inputs):
        array = inputs[name]
        shape = array.shape
        if not shape:
            return None
        if rows < 0:
            rows = shape[0]
        elif shape[0] != rows:
            return None
        if pad:
            if array.size == 0:
                return None
            parts.append((name, array.dtype, len(shape)))
        else:
            parts.append((name, array.dtype, shape[1:]))
    if rows <= 0:
        return None
    return rows, tuple(parts)


def merge_inputs(tasks: Sequence[Task], rows: int, padded: int, pad: bool) -> dict[str, np.ndarray]:
    """The batch's inputs: tasks' arrays stacked on dimension 0, then padded to ``padded`` rows.

    Padding rows repeat the last task's first row, a row the model is known to
    accept. With ``pad``, shorter non-batch dimensions are filled with each
    array's own first element, as TF Serving does.
    """
    if len(tasks) == 1 and padded == rows:
        return dict(tasks[0].inputs)
    merged: dict[str, np.ndarray] = {}
    for name in tasks[0].inputs:
        arrays = [task.inputs[name] for task in tasks]
        if pad:
            target = tuple(max(dims) for dims in zip(*(a.shape[1:] for a in arrays), strict=True))
            if any(a.shape[1:] != target for a in arrays):
                merged[name] = _pad_merge(arrays, target, padded)
                continue
        if padded > rows:
            last = arrays[-1]
            arrays.append(np.broadcast_to(last[:1], (padded - rows, *last.shape[1:])))
        merged[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return merged


def _pad_merge(arrays: list[np.ndarray], target: tuple[int, ...], padded: int) -> np.ndarray:
    out = np.empty((padded, *target), dtype=arrays[0].dtype)
    start = 0
    for array in arrays:
        stop = start + array.shape[0]
        if array.shape[1:] == target:
            out[start:stop] = array
        else:
            out[start:stop] = array.flat[0]
            out[(slice(start, stop), *(slice(0, d) for d in array.shape[1:]))] = array
        start = stop
    if padded > start:
        out[start:] = out[start - arrays[-1].shape[0]]
    return out


def split_outputs(
    outputs: Mapping[str, np.ndarray], sizes: Sequence[int], padded: int
) -> list[dict[str, np.ndarray]]:
    """Each task's rows of the batch's outputs (views, no copies); padding rows dropped."""
    for name, value in outputs.items():
        shape = np.shape(value)
        if not shape:
            raise FailedPrecondition(f"Batched output tensor '{name}' has 0 dimensions")
        if shape[0] != padded:
            raise FailedPrecondition(
                f"Batched output tensor '{name}''s 0th dimension ({shape[0]}) does not equal "
                f"the sum of the 0th dimension sizes of the input tensors ({padded})"
            )
    if len(sizes) == 1 and sizes[0] == padded:
        return [dict(outputs)]
    parts: list[dict[str, np.ndarray]] = []
    start = 0
    for size in sizes:
        stop = start + size
        parts.append({name: value[start:stop] for name, value in outputs.items()})
        start = stop
    return parts
