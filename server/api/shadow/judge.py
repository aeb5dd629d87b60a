"""Do the baseline's and our answer to one request agree? ``codec.tolerance`` decides.

Each API's response becomes named arrays: Predict's outputs by alias, Classify's
``classes/label`` and ``classes/score``, Regress's ``value``, MultiInference's per
task (``<i>/classes/score``, ...). Each is judged as ``compare`` judges it: exactly
(strings, integers), within atol + rtol * |baseline|, or by top-k class indices.
Two refusals with one status code agree, as in ``compare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import Message

from onnx_serving.codec.tensors import TensorCodecError, make_ndarray
from onnx_serving.codec.tolerance import differences, how_to_check, same_top_k, top_k
from onnx_serving.protos.tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)


@dataclass(frozen=True)
class Refusal:
    """An answer that is a gRPC status: ``code`` is its name (``INVALID_ARGUMENT``)."""

    code: str
    details: str


@dataclass(frozen=True)
class OutputVerdict:
    agreed: bool
    check: str  # exact | tolerance | top_k | shape | missing
    max_abs: float | None = None
    max_rel: float | None = None


@dataclass(frozen=True)
class Verdict:
    agreed: bool
    outputs: dict[str, OutputVerdict] = field(default_factory=dict)
    reason: str = ""  # why not, in a few words


def judge(baseline: Message | Refusal, ours: Message | Refusal, atol: float, rtol: float,
          k: int) -> Verdict:
    if isinstance(baseline, Refusal) or isinstance(ours, Refusal):
        if isinstance(baseline, Refusal) and isinstance(ours, Refusal) \
                and baseline.code == ours.code:
            return Verdict(True)
        said = [a.code if isinstance(a, Refusal) else "OK" for a in (baseline, ours)]
        return Verdict(False, reason=f"status {said[0]} from the baseline, {said[1]} from ours")
    try:
        b, o = arrays(baseline), arrays(ours)
    except TensorCodecError as exc:
        return Verdict(False, reason=f"undecodable answer: {exc}")
    outputs = {alias: _output(b.get(alias), o.get(alias), atol, rtol, k)
               for alias in sorted(b.keys() | o.keys())}
    bad = [alias for alias, v in outputs.items() if not v.agreed]
    return Verdict(not bad, outputs, f"outputs {', '.join(bad)} differ" if bad else "")


def arrays(response: Message) -> dict[str, np.ndarray]:
    """A response's values by output name."""
    if isinstance(response, predict_pb2.PredictResponse):
        return {alias: make_ndarray(t) for alias, t in response.outputs.items()}
    if isinstance(response, classification_pb2.ClassificationResponse):
        return _classifications(response.result, "")
    if isinstance(response, regression_pb2.RegressionResponse):
        return {"value": np.array([r.value for r in response.result.regressions], np.float32)}
    assert isinstance(response, inference_pb2.MultiInferenceResponse)
    named: dict[str, np.ndarray] = {}
    for i, result in enumerate(response.results):
        if result.HasField("classification_result"):
            named.update(_classifications(result.classification_result, f"{i}/"))
        else:
            values = [r.value for r in result.regression_result.regressions]
            named[f"{i}/value"] = np.array(values, np.float32)
    return named


def _classifications(result: classification_pb2.ClassificationResult,
                     prefix: str) -> dict[str, np.ndarray]:
    rows = [list(c.classes) for c in result.classifications]
    return {
        f"{prefix}classes/label": np.array([[c.label for c in row] for row in rows], object),
        f"{prefix}classes/score": np.array([[c.score for c in row] for row in rows], np.float32),
    }


def _output(b: np.ndarray | None, o: np.ndarray | None, atol: float, rtol: float,
            k: int) -> OutputVerdict:
    if b is None or o is None:
        return OutputVerdict(False, "missing")
    if b.shape != o.shape:
        return OutputVerdict(False, "shape")
    check = how_to_check(b, k)
    if check == "exact" or o.dtype.kind in "OSU":
        return OutputVerdict(bool(np.array_equal(b, o)), "exact")
    if not b.size:
        return OutputVerdict(True, check)
    found = differences(b, o, atol, rtol)
    if check == "top_k":
        agreed = bool(same_top_k(top_k(b, k), top_k(o, k)).all())
    else:
        agreed = not found.outside.any()
    return OutputVerdict(agreed, check, found.max_abs, found.max_rel)
