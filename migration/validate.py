"""Does the ONNX model answer as the SavedModel did? Same inputs, both runtimes, max errors.

Inputs are the version's warmup requests for that signature when it has
some (real traffic, as TF Serving replays it), otherwise random values built
from the signature: dtype and shape, unknown sizes set to 2.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnx_serving.codec.prediction_log import PredictionLogError, read_prediction_logs
from onnx_serving.codec.served_model import WARMUP_FILE, signature_key
from onnx_serving.codec.tensors import TensorCodecError, make_ndarray
from onnx_serving.codec.tolerance import differences
from onnx_serving.migration.example_spec import random_examples, tensorflow_parse
from onnx_serving.migration.saved_model import SignatureSig, TensorFlowRunner, TensorSig
from onnx_serving.migration.served_session import ServedSession


@dataclass
class OutputError:
    max_abs: float = 0.0
    max_rel: float = 0.0
    outside: int = 0  # elements with |onnx - tf| > atol + rtol * |tf|, as numpy.isclose
    mismatch: str = ""  # shape, dtype or string content that differs


@dataclass
class Validation:
    signature: str
    samples: int
    source: str  # "warmup" or "random"
    outputs: dict[str, OutputError] = field(default_factory=dict)
    # TensorFlow gave the same outputs for every input: agreement then proves little
    # (an untrained model whose activations all die, say).
    constant: bool = False

    @property
    def passed(self) -> bool:
        return all(not e.mismatch and not e.outside for e in self.outputs.values())

    @property
    def max_abs(self) -> float:
        return max((e.max_abs for e in self.outputs.values()), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((e.max_rel for e in self.outputs.values()), default=0.0)


def sample_inputs(
    version_dir: Path, signature: SignatureSig, count: int, seed: int,
    parse: Mapping[str, Any] | None = None,
) -> tuple[str, list[dict[str, np.ndarray]]]:
    """The warmup requests for this signature if any, else ``count`` random ones (for an
    input parsed as tf.Example, random Examples of its spec)."""
    warmup = list(_warmup_inputs(version_dir / WARMUP_FILE, signature))
    if warmup:
        return "warmup", warmup
    rng = np.random.default_rng(seed)
    return "random", [
        {
            alias: random_examples(parse, rng, 2 + i % 2)
            if parse is not None and alias == parse["input"] else random_tensor(spec, rng)
            for alias, spec in signature.inputs.items()
        }
        for i in range(count)
    ]


def _warmup_inputs(path: Path, signature: SignatureSig) -> Iterator[dict[str, np.ndarray]]:
    if not path.exists():
        return
    try:
        for record in read_prediction_logs(path):
            if record.WhichOneof("log_type") != "predict_log":
                continue
            request = record.predict_log.request
            if signature_key(request.model_spec.signature_name) != signature.name:
                continue
            if set(request.inputs) == set(signature.inputs):
                yield {k: make_ndarray(v) for k, v in request.inputs.items()}
    except (PredictionLogError, TensorCodecError):
        return  # an unreadable warmup file: random inputs instead


def random_tensor(spec: TensorSig, rng: np.random.Generator) -> np.ndarray:
    dims = (2,) if spec.shape is None else tuple(2 if d < 0 else d for d in spec.shape)
    dtype = spec.numpy
    if dtype.kind == "O":
        return np.array(
            [f"text {i}".encode() for i in rng.integers(0, 100, size=int(np.prod(dims)))],
            dtype=object,
        ).reshape(dims)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=dims).astype(np.bool_)
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=dims).astype(dtype)
    return rng.standard_normal(size=dims).astype(dtype)


def validate(
    runner: TensorFlowRunner,
    session: ServedSession,
    signature: SignatureSig,
    onnx_names: Mapping[str, str],
    samples: list[dict[str, np.ndarray]],
    source: str,
    *,
    atol: float,
    rtol: float,
    parse: Mapping[str, Any] | None = None,
) -> Validation:
    """``onnx_names``: alias → ONNX graph tensor, inputs and outputs alike; an input parsed
    as tf.Example (``parse``) is parsed by TensorFlow for the ONNX graph."""
    result = Validation(signature.name, len(samples), source)
    output_names = [onnx_names[alias] for alias in signature.outputs]
    first: dict[str, np.ndarray] | None = None
    varied = False
    for inputs in samples:
        expected = runner.run(signature.name, inputs)
        if first is None:
            first = expected
        else:
            varied = varied or any(
                first[a].shape != expected[a].shape or not np.array_equal(first[a], expected[a])
                for a in expected
            )
        parsed = tensorflow_parse(parse, inputs[parse["input"]]) if parse is not None else {}
        feeds = {onnx_names[a]: v for a, v in inputs.items() if a in onnx_names}
        feeds = {**feeds, **parsed}
        got = dict(zip(signature.outputs, session.run(output_names, feeds), strict=True))
        for alias in signature.outputs:
            error = result.outputs.setdefault(alias, OutputError())
            accumulate(error, expected[alias], got[alias], atol, rtol)
    result.constant = len(samples) > 1 and not varied
    return result


def accumulate(
    error: OutputError, expected: np.ndarray, got: np.ndarray, atol: float, rtol: float
) -> None:
    if expected.shape != got.shape:
        error.mismatch = f"shape {list(got.shape)}, expected {list(expected.shape)}"
        return
    if expected.dtype == object or got.dtype == object:
        as_bytes = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])
        if expected.size and not np.array_equal(as_bytes(expected), as_bytes(got)):
            error.mismatch = "string values differ"
        return
    if expected.dtype != got.dtype:
        error.mismatch = f"dtype {got.dtype}, expected {expected.dtype}"
        return
    if expected.size == 0:
        return
    found = differences(expected, got, atol, rtol)
    error.max_abs = max(error.max_abs, found.max_abs)
    error.max_rel = max(error.max_rel, found.max_rel or 0.0)
    error.outside += int(np.count_nonzero(found.outside))
