"""bench/versus.py serves another commit's code beside this checkout's and reports both.
A run of the tool, not a timing: no figure is judged here."""

from __future__ import annotations

import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench import versus
from bench.suite.models import REPO


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_the_base_is_that_commits_code_first_on_the_import_path(tmp_path: Path) -> None:
    base = _git("rev-parse", "HEAD")
    with ExitStack() as stack:
        code = versus.checkout(stack, "HEAD", tmp_path)
        found = subprocess.run(
            [sys.executable, "-c", "import onnx_serving.server as s; print(s.__file__)"],
            env={"PYTHONPATH": str(code)}, cwd=tmp_path, check=True, capture_output=True,
            text=True).stdout.strip()
        assert Path(found).is_relative_to(code / versus.PACKAGE)
        assert subprocess.run(["git", "-C", str(code / versus.PACKAGE), "rev-parse", "HEAD"],
                              check=True, capture_output=True, text=True).stdout.strip() == base
        tree = (code / versus.PACKAGE).resolve()
    assert not tree.exists()  # the worktree goes with the run
    assert str(tree) not in _git("worktree", "list")


@pytest.mark.parametrize("extra", [[], ["--rest"]])
def test_both_servers_answer_and_are_reported(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert versus.main(["--base=HEAD", "--clients=2", "--seconds=0.3", "--rounds=2",
                        *extra]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith(("| server", "| ---"))]
    assert [row[1].strip() for row in rows] == ["this checkout", "HEAD"]
    assert all(row[-2].strip() == "0" and float(row[2]) > 0 for row in rows)  # no errors
