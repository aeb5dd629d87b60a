"""Predict outputs → the response body, in the request's format (TF's MakeJsonFromTensors).

Row format: {"predictions": [...]}, one entry per batch row, each the
single output's value or an object of every output's value. Columnar:
{"outputs": value}, or an object of values when there are several.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from onnx_serving.server.api.rest.tensor_to_json import (
    as_objects,
    brackets,
    element_texts,
    empty_json,
    interleave,
    is_bytes_alias,
    tensor_json,
)
from onnx_serving.server.errors import InvalidArgument


def columnar_json(outputs: Mapping[str, np.ndarray]) -> str:
    if len(outputs) == 1:
        ((alias, array),) = outputs.items()
        return '{"outputs": ' + tensor_json(array, is_bytes_alias(alias, array)) + "}"
    fields = (
        f"{_key(alias)}: {tensor_json(array, is_bytes_alias(alias, array))}"
        for alias, array in outputs.items()
    )
    return '{"outputs": {' + ", ".join(fields) + "}}"


def row_json(outputs: Mapping[str, np.ndarray]) -> str:
    batch = -1
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {alias} has no shape information ")
        if batch >= 0 and array.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    if len(outputs) == 1:
        ((alias, array),) = outputs.items()
        # One output: the rows are the tensor's first dimension, so this is the tensor itself.
        return '{"predictions": ' + tensor_json(array, is_bytes_alias(alias, array)) + "}"
    return '{"predictions": [' + _row_objects(outputs, batch) + "]}"


def _row_objects(outputs: Mapping[str, np.ndarray], batch: int) -> str:
    """``{"a": a[i], "b": b[i]}`` for every row i, without a Python loop over rows."""
    if batch == 0:
        return ""
    if any(array.size == 0 for array in outputs.values()):
        return ",".join(_row_object(outputs, row) for row in range(batch))
    row_sizes = [array.size // batch for array in outputs.values()]
    row_size = sum(row_sizes)
    total = batch * row_size
    before = np.empty(total, dtype=object)
    texts = np.empty(total, dtype=object)
    after = np.empty(total, dtype=object)
    rows = np.arange(batch, dtype=np.int64) * row_size
    offset = 0
    last = len(outputs) - 1
    for number, ((alias, array), size) in enumerate(zip(outputs.items(), row_sizes, strict=True)):
        pre, post = brackets(array.shape[1:], batch)
        firsts = np.arange(batch) * size
        lasts = firsts + size - 1
        opening = ("{" if number == 0 else "") + _key(alias) + ": "
        pre[firsts] = opening + pre[firsts]
        if number == last:
            post[lasts] = post[lasts] + "},"
            post[-1] = post[-1][:-1]
        else:
            post[lasts] = post[lasts] + ", "
        positions = (rows[:, None] + offset + np.arange(size)).reshape(-1)
        before[positions] = pre
        texts[positions] = as_objects(element_texts(array, is_bytes_alias(alias, array)))
        after[positions] = post
        offset += size
    return interleave(before, texts, after)


def _row_object(outputs: Mapping[str, np.ndarray], row: int) -> str:
    fields = []
    for alias, array in outputs.items():
        value = array[row:row + 1].reshape(array.shape[1:])  # an array even when 0-d
        text = empty_json(value.shape) if value.size == 0 else tensor_json(
            value, is_bytes_alias(alias, array)
        )
        fields.append(f"{_key(alias)}: {text}")
    return "{" + ", ".join(fields) + "}"


def _key(alias: str) -> str:
    return json.dumps(alias, ensure_ascii=False)
