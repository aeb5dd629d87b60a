"""bench/handler_profile.py loops our Python of one Predict, with the model's run or with
runs answered from a cache (``--cached_run``, the difference docs/performance.md reads as
the run's cost among the request's other work), or TF Serving's REST ``:predict`` (``--rest``).
A run of the tool: no figure is judged."""

from __future__ import annotations

import re

import pytest

from bench import handler_profile


@pytest.mark.parametrize("extra", [[], ["--cached_run"], ["--rest"]])
def test_the_loop_reports_its_cpu_per_predict(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert handler_profile.main(["--n=200", *extra]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    asked = "REST :predict" if "--rest" in extra else "Predict"
    assert re.fullmatch(rf"[0-9.]+ µs of CPU per {asked} \(half_plus_two, bare.*\)", line)
    assert ("runs answered from a cache" in line) == ("--cached_run" in extra)
