"""One agreement check for `convert`'s validation and `compare`: NaN only matches NaN."""

from __future__ import annotations

import numpy as np
import pytest

from onnx_serving.codec.tolerance import differences
from onnx_serving.migration.compare_agreement import Agreement, Tolerance
from onnx_serving.migration.validate import OutputError, accumulate

NAN, INF = float("nan"), float("inf")
CASES = [
    ([1.0, 2.0], [1.0, 2.0005], True),  # within atol + rtol * |expected|
    ([1.0, 2.0], [1.0, 2.01], False),
    ([NAN, 1.0], [NAN, 1.0], True),
    ([NAN, 1.0], [0.0, 1.0], False),  # TensorFlow NaN, ONNX a number
    ([0.0, 1.0], [NAN, 1.0], False),
    ([INF, -INF], [INF, -INF], True),
    ([INF, 1.0], [3e38, 1.0], False),
    ([INF], [-INF], False),
]


@pytest.mark.parametrize(("expected", "got", "agree"), CASES)
def test_convert_and_compare_judge_alike(expected, got, agree) -> None:
    e, g = np.array(expected, np.float32), np.array(got, np.float32)
    assert (not differences(e, g, 1e-4, 1e-3).outside.any()) == agree

    validation = OutputError()
    accumulate(validation, e, g, 1e-4, 1e-3)
    assert (validation.outside == 0) == agree

    agreement = Agreement(Tolerance(atol=1e-4, rtol=1e-3))
    agreement.add(0, {"baseline": {"y": e}, "candidate": {"y": g}})
    agreement.finish()
    assert agreement.outputs["y"].passed == agree
