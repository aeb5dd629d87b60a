"""Predict on a pinned version: TF Serving's checks in its order, then the model.

The front end supplies how its request becomes tensors (``decode``) and how
outputs become its answer (``encode``). ``encode`` runs while the outputs are
still valid: with IO binding they are buffers the next request reuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

import numpy as np

from onnx_serving.server.metrics import StageClock
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.runtime.model import LoadedModel, Outputs
from onnx_serving.server.runtime.signature import Signature, find_signature

T = TypeVar("T")


class Served(NamedTuple):
    """What answered, as responses echo it in their model_spec (a tuple: made on every
    request, at a fraction of a frozen dataclass's cost)."""

    name: str
    version: int
    signature: str


# The request's inputs by alias. Its keys are checked before any value is read, so a
# front end may decode lazily and key errors come before decoding ones, as in TF.
Decode = Callable[[Signature], Mapping[str, np.ndarray]]
Encode = Callable[[Served, Outputs], T]
# Inputs, the version and signature that answered, and outputs (valid during the call).
Log = Callable[[Mapping[str, np.ndarray], int, str, Outputs], None]


def predict(
    model: LoadedModel,
    name: str,
    version: int,
    signature_name: str,
    decode: Decode,
    encode: Encode[T],
    *,
    output_filter: Sequence[str] = (),
    find: Callable[[Mapping[str, Signature], str], Signature] = find_signature,
    observe: Callable[[str, float], None] | None = None,
    log: Log | None = None,
    deadline: Deadline | None = None,
) -> T:
    """``find`` resolves the signature (REST words a missing one its own way);
    ``observe`` gets the seconds spent in each stage: decode, run, encode; ``log``, when
    given (a sampled request), gets a successful request's inputs and outputs; the run is
    skipped once ``deadline`` has passed."""
    clock = StageClock(observe)
    signature = find(model.signatures, signature_name)
    inputs = decode(signature)
    signature.check_input_keys(inputs.keys())
    arrays = {alias: inputs[alias] for alias in inputs}
    clock.lap("decode")
    with model.predict(signature, arrays, output_filter, deadline) as outputs:
        clock.lap("run")
        result = encode(Served(name, version, signature.name), outputs)
        if log is not None:
            log(arrays, version, signature.name, outputs)
    clock.lap("encode")
    return result
