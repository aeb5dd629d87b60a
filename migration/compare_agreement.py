"""Do two sides' outputs agree? Tolerances for floats, exact values otherwise, top-k for scores."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnx_serving.codec.tolerance import differences, how_to_check, same_top_k, top_k
from onnx_serving.migration.compare_requests import SIDES, Request, Side, SideError

# Problems listed per output; the rest are counted.
MAX_PROBLEMS = 5


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-3
    top_k: int = 0  # 0: no output is judged as class scores
    top_k_outputs: frozenset[str] = frozenset()  # empty: every 2-D float output wider than k


@dataclass
class OutputCheck:
    """One output alias over every request both sides answered.

    ``check`` is how it is judged: "exact" (strings, integers, booleans), "tolerance"
    (|candidate - baseline| <= atol + rtol * |baseline| everywhere, NaN only against
    NaN) or "top_k" (class scores: each row's top-k index set must be the same; the
    errors are still reported).
    """

    alias: str
    check: str = ""
    dtypes: dict[str, str] = field(default_factory=dict)
    shape: list[int | None] | None = None  # None where requests differ in that dim
    requests: int = 0
    elements: int = 0
    mismatched: int = 0
    max_abs_error: float | None = None
    max_rel_error: float | None = None  # over elements where the baseline is not zero
    # The differing element with the largest error (strings: the first difference).
    worst: dict[str, Any] | None = None
    worst_error: float = field(default=0.0, repr=False)
    top_k_rows: int = 0
    top_k_agreeing: int = 0
    top_k_first_difference: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    more_problems: int = 0

    @property
    def passed(self) -> bool:
        if self.problems or self.requests == 0:
            return False
        if self.check == "top_k":
            return self.top_k_agreeing == self.top_k_rows
        return self.mismatched == 0

    def problem(self, message: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(message)
        else:
            self.more_problems += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "passed": self.passed,
            "check": self.check,
            "dtype": self.dtypes,
            "shape": self.shape,
            "requests": self.requests,
            "elements": self.elements,
            "mismatched_elements": self.mismatched,
            "max_abs_error": _finite_or_text(self.max_abs_error),
            "max_rel_error": _finite_or_text(self.max_rel_error),
            "worst": self.worst,
            "top_k_rows": self.top_k_rows if self.check == "top_k" else None,
            "top_k_rows_agreeing": self.top_k_agreeing if self.check == "top_k" else None,
            "top_k_first_difference": self.top_k_first_difference,
            "problems": self.problems,
            "more_problems": self.more_problems,
        }


@dataclass(frozen=True)
class RequestFailure:
    """A request one side or both refused; both refusing with one code is agreement."""

    index: int
    errors: dict[str, SideError | None]

    @property
    def agreed(self) -> bool:
        codes = {error.code if error else None for error in self.errors.values()}
        return None not in codes and len(codes) == 1

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.index,
            **{side: str(error) if error else None for side, error in self.errors.items()},
            "both_refused_alike": self.agreed,
        }


@dataclass
class Agreement:
    tolerance: Tolerance
    outputs: dict[str, OutputCheck] = field(default_factory=dict)
    failures: list[RequestFailure] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)  # requests both sides answered
    missing: dict[str, Counter[str]] = field(default_factory=dict)  # alias → side → requests

    @property
    def passed(self) -> bool:
        return (
            bool(self.answered)
            and all(check.passed for check in self.outputs.values())
            and all(failure.agreed for failure in self.failures)
        )

    def add(self, index: int, answers: Mapping[str, dict[str, np.ndarray] | SideError]) -> None:
        if any(isinstance(answer, SideError) for answer in answers.values()):
            errors = {s: a if isinstance(a, SideError) else None for s, a in answers.items()}
            self.failures.append(RequestFailure(index, errors))
            return
        baseline, candidate = (answers[side] for side in SIDES)
        assert not isinstance(baseline, SideError) and not isinstance(candidate, SideError)
        self.answered.append(index)
        for alias in sorted(baseline.keys() | candidate.keys()):
            check = self.outputs.setdefault(alias, OutputCheck(alias))
            if alias not in candidate or alias not in baseline:
                side = "candidate" if alias not in candidate else "baseline"
                self.missing.setdefault(alias, Counter())[side] += 1
                continue
            _compare(check, index, baseline[alias], candidate[alias], self.tolerance)

    def finish(self) -> None:
        """Folds what is only known at the end (missing outputs, --top_k_outputs) into problems."""
        for alias, sides in self.missing.items():
            for side, count in sides.items():
                self.outputs[alias].problems.insert(
                    0, f"missing from the {side}'s answers to {count} of "
                    f"{len(self.answered)} requests"
                )
        for alias in sorted(self.tolerance.top_k_outputs):
            check = self.outputs.get(alias)
            if check is None:
                check = self.outputs[alias] = OutputCheck(alias, check="top_k")
                check.problem("named by --top_k_outputs, but neither side returned it")
            elif check.check != "top_k" and check.requests:
                check.problem(
                    f"named by --top_k_outputs, but not 2-D float scores wider than "
                    f"{self.tolerance.top_k}"
                )


def compare_outputs(
    sides: Mapping[str, Side], requests: Sequence[Request], tolerance: Tolerance
) -> Agreement:
    """Each request to the baseline, then the candidate, one at a time."""
    agreement = Agreement(tolerance)
    for index, request in enumerate(requests):
        answers: dict[str, dict[str, np.ndarray] | SideError] = {}
        for name in SIDES:
            try:
                answers[name] = sides[name].predict(request)
            except SideError as exc:
                answers[name] = exc
        agreement.add(index, answers)
    agreement.finish()
    return agreement


def _compare(
    check: OutputCheck, index: int, b: np.ndarray, c: np.ndarray, tolerance: Tolerance
) -> None:
    dtypes = {"baseline": _dtype_name(b), "candidate": _dtype_name(c)}
    if not check.check:
        check.check = _how_to_check(check.alias, b, tolerance)
        check.dtypes = dtypes
        check.shape = list(b.shape)
        if dtypes["baseline"] != dtypes["candidate"]:
            check.problem(f"dtype {dtypes['baseline']} in the baseline, "
                          f"{dtypes['candidate']} in the candidate")
    elif dtypes != check.dtypes:
        check.problem(f"request {index}: dtypes {dtypes} where earlier {check.dtypes}")
    if b.shape != c.shape:
        check.problem(f"request {index}: shape {list(b.shape)} in the baseline, "
                      f"{list(c.shape)} in the candidate")
        return
    check.shape = _merge_shape(check.shape, b.shape)
    check.requests += 1
    check.elements += b.size
    is_text = [a.dtype.kind in "OSU" for a in (b, c)]
    if any(is_text):
        if all(is_text):
            _count_exact(check, index, b, c)
        return
    if b.size:
        _measure_errors(check, index, b, c, tolerance)
    if check.check == "top_k":
        if b.ndim == 2 and b.shape[1] > tolerance.top_k:
            _check_top_k(check, index, b, c, tolerance.top_k)
        else:
            check.problem(f"request {index}: shape {list(b.shape)} holds no rows of more "
                          f"than {tolerance.top_k} scores")


def _how_to_check(alias: str, b: np.ndarray, tolerance: Tolerance) -> str:
    named = not tolerance.top_k_outputs or alias in tolerance.top_k_outputs
    return how_to_check(b, tolerance.top_k, named)


def _count_exact(check: OutputCheck, index: int, b: np.ndarray, c: np.ndarray) -> None:
    differ = np.asarray(b != c, dtype=bool)
    check.mismatched += int(differ.sum())
    if differ.any() and check.worst is None:
        where = np.unravel_index(int(np.argmax(differ)), b.shape)
        check.worst = _where(index, where, b, c)


def _measure_errors(
    check: OutputCheck, index: int, b: np.ndarray, c: np.ndarray, tolerance: Tolerance
) -> None:
    """Max errors in float64 (complex128 for complex), NaN agreeing only with NaN."""
    found = differences(b, c, tolerance.atol, tolerance.rtol)
    diff, rel = found.diff, found.max_rel
    outside = np.asarray(b != c, dtype=bool) if check.check == "exact" else found.outside
    check.mismatched += int(outside.sum())  # reported for top_k outputs, not judged
    abs_error = float(diff.max())
    if check.max_abs_error is None or abs_error > check.max_abs_error:
        check.max_abs_error = abs_error
    if outside.any():
        flat = int(np.argmax(np.where(outside, diff, -1.0)))
        if check.worst is None or float(diff.flat[flat]) > check.worst_error:
            check.worst_error = float(diff.flat[flat])
            check.worst = _where(index, np.unravel_index(flat, b.shape), b, c)
            check.worst["abs_error"] = _finite_or_text(check.worst_error)
    if rel is not None and (check.max_rel_error is None or rel > check.max_rel_error):
        check.max_rel_error = rel


def _check_top_k(check: OutputCheck, index: int, b: np.ndarray, c: np.ndarray, k: int) -> None:
    """Counts rows whose k highest scores sit at the same indices, in any order."""

    top_b, top_c = top_k(b, k), top_k(c, k)
    agree = same_top_k(top_b, top_c)
    check.top_k_rows += b.shape[0]
    check.top_k_agreeing += int(agree.sum())
    if check.top_k_first_difference is None and not agree.all():
        row = int(np.argmin(agree))
        check.top_k_first_difference = {
            "request": index,
            "row": row,
            "baseline": [int(i) for i in top_b[row]],  # highest score first
            "candidate": [int(i) for i in top_c[row]],
        }


def _where(index: int, where: tuple[Any, ...], b: np.ndarray, c: np.ndarray) -> dict[str, Any]:
    return {
        "request": index,
        "index": [int(i) for i in where],
        "baseline": _scalar(b[where]),
        "candidate": _scalar(c[where]),
    }


def _merge_shape(
    shape: list[int | None] | None, new: tuple[int, ...]
) -> list[int | None] | None:
    if shape is None or len(shape) != len(new):
        return None
    return [d if d == n else None for d, n in zip(shape, new, strict=True)]


def _dtype_name(array: np.ndarray) -> str:
    return "string" if array.dtype.kind in "OSU" else array.dtype.name


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (np.complexfloating, complex)):
        return str(complex(value))
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return _finite_or_text(float(value))


def _finite_or_text(value: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those become "nan", "inf" and "-inf"."""
    if value is None or np.isfinite(value):
        return value
    return str(value)


