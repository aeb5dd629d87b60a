"""The one agreement check, shared by ``convert``'s validation, ``compare`` and live shadowing.

Elements agree when equal (NaN with NaN, an infinity with the same infinity) or,
both finite, when |got - expected| <= atol + rtol * |expected| (numpy's isclose).
NaN against a number, or an infinity against anything else, never agrees.
Strings, integers and booleans are judged exactly; class scores (2-D floats wider
than k, when a top-k check is asked for) by each row's set of k highest scores.
Here in ``codec`` because the server shadowing TF Serving judges with it too, and
the server never imports ``migration``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Differences:
    # |got - expected| in float64 (complex: the modulus); inf where NaN meets a number.
    diff: np.ndarray
    outside: np.ndarray  # bool: elements that do not agree
    max_rel: float | None  # over elements where both are finite and expected is not zero

    @property
    def max_abs(self) -> float:
        return float(self.diff.max()) if self.diff.size else 0.0


def differences(expected: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> Differences:
    """Same shape required; computed in float64 (complex128 when either side is complex)."""
    wide = np.complex128 if "c" in (expected.dtype.kind, got.dtype.kind) else np.float64
    e, g = expected.astype(wide), got.astype(wide)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        same = (e == g) | (np.isnan(e) & np.isnan(g))
        diff = np.abs(g - e)
        diff[same] = 0.0
        diff[np.isnan(diff)] = np.inf
        finite = np.isfinite(e) & np.isfinite(g)
        scale = np.abs(e)
        outside = ~same & (~finite | (diff > atol + rtol * scale))
        relative = finite & (scale > 0)
        max_rel = float((diff[relative] / scale[relative]).max()) if relative.any() else None
    return Differences(diff, outside, max_rel)


Check = Literal["exact", "tolerance", "top_k"]


def how_to_check(baseline: np.ndarray, top_k: int, named: bool = True) -> Check:
    """``named``: the output may be judged as class scores (``--top_k_outputs``)."""
    if baseline.dtype.kind in "OSUbiu":
        return "exact"
    scores = is_float(baseline.dtype) and baseline.ndim == 2 and baseline.shape[1] > top_k
    return "top_k" if top_k and named and scores else "tolerance"


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's indices of its k highest scores, highest first (ties: lower index)."""
    return np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]


def same_top_k(top_expected: np.ndarray, top_got: np.ndarray) -> np.ndarray:
    """Per row: the same k indices, in any order."""
    return np.all(np.sort(top_expected, axis=1) == np.sort(top_got, axis=1), axis=1)


def is_float(dtype: np.dtype) -> bool:
    # ml_dtypes' bfloat16 and float8 types are numpy kind "V".
    return dtype.kind == "f" or dtype.name.startswith(("bfloat", "float8"))
