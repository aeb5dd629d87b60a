"""The one numeric agreement check, shared by ``convert``'s validation and ``compare``.

Elements agree when equal (NaN with NaN, an infinity with the same infinity) or,
both finite, when |got - expected| <= atol + rtol * |expected| (numpy's isclose).
NaN against a number, or an infinity against anything else, never agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

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
