"""bench/floor.py climbs its five servers and reports each: the echo server's --parse and
--run steps answer real Predict calls. A run of the tool, not a timing: no figure is
judged here (docs/performance.md has them)."""

from __future__ import annotations

import pytest

from bench import floor


def test_the_floor_reports_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert floor.main(["--clients=2", "--seconds=0.3", "--rounds=1"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith(("| server", "| ---"))]
    assert [row[1].strip() for row in rows] == [
        "echo", "echo + protobuf messages", "echo + protobuf messages + the model's run",
        "echo on onnx-serving's unary lane", floor.SERVING,
    ]
    assert all(row[-2].strip() == "0" and float(row[2]) > 0 for row in rows)  # no errors
