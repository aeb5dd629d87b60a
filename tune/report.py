"""A sweep's rows, the choice among them, and its reports: a table, a plot, an HTML page,
JSON."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onnx_serving.tune.load import Result
from onnx_serving.tune.settings import Setting

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Row:
    label: str
    setting: Setting
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rounds: tuple[float, ...]  # requests per second in each round
    errors: int
    first_error: str
    busy_threads_per_core: float
    oversubscribed: bool  # more than one thread beyond the cores (threads.py's rule)

    @classmethod
    def of(cls, setting: Setting, rounds: Sequence[Result], cpus: int, label: str = "") -> Row:
        """The rounds' latencies pooled; their throughputs kept apart, for the spread."""
        pooled = Result()
        for result in rounds:
            pooled.add(result)
        return cls(label or setting.label, setting, pooled.percentile_ms(50),
                   pooled.percentile_ms(95), pooled.percentile_ms(99),
                   tuple(r.throughput for r in rounds), pooled.errors, pooled.first_error,
                   setting.busy_threads(cpus) / cpus,
                   setting.threads(cpus).oversubscribes(cpus))

    @property
    def throughput(self) -> float:
        """The median round's requests per second."""
        return statistics.median(self.rounds) if self.rounds else 0.0

    @property
    def low(self) -> float:
        return min(self.rounds, default=0.0)

    @property
    def high(self) -> float:
        return max(self.rounds, default=0.0)

    @property
    def spread(self) -> str:
        return f"{self.low:.1f}-{self.high:.1f}"

    def fits(self, budget_ms: float | None) -> bool:
        """Answered without errors, within the p99 budget (if any)."""
        return (not self.errors and self.throughput > 0
                and (budget_ms is None or self.p99_ms <= budget_ms))


@dataclass(frozen=True)
class Choice:
    """The setting to apply (``None``: none fits) and why; the fastest, when it differs."""

    row: Row | None
    fastest: Row | None
    reason: str

    @property
    def keeps_default(self) -> bool:
        return self.row is not None and self.row.setting.is_default


def choose(rows: Sequence[Row], budget_ms: float | None) -> Choice:
    """The default unless a setting beats it beyond the rounds' spread: its slowest round
    faster than the default's fastest. Rounds are interleaved, so drift on the machine
    shows in every setting's spread alike; a win inside it is noise, and applying it
    changes the server for nothing. Among settings that fit (no errors, p99 within the
    budget), the fastest is the one with the highest median round."""
    fit = [r for r in rows if r.fits(budget_ms)]
    if not fit:
        return Choice(None, None, "no setting met the latency budget without errors")
    fastest = max(fit, key=lambda r: r.throughput)
    default = next((r for r in rows if r.setting.is_default), None)
    if fastest is default:
        return Choice(fastest, fastest, "the default is the fastest")
    if default is None or default not in fit:
        return Choice(fastest, fastest, "the default "
                      + ("was not measured" if default is None else "did not fit"))
    if fastest.low > default.high:
        return Choice(fastest, fastest, f"beats the default beyond the spread: "
                      f"{fastest.spread} against {default.spread} req/s over the rounds")
    return Choice(default, fastest, f"default kept within noise: {fastest.label} "
                  f"({fastest.spread} req/s over the rounds) overlaps the default "
                  f"({default.spread})")


_HEAD = ("setting", "p50 ms", "p95 ms", "p99 ms", "req/s (median)", "req/s min-max",
         "vs default", "errors", "note")


def _cells(row: Row, default: Row | None, choice: Choice) -> tuple[str, ...]:
    ratio = (f"{row.throughput / default.throughput:.2f}x"
             if default is not None and default.throughput else "-")
    notes = []
    if row is choice.row:
        notes.append("BEST")
    elif row is choice.fastest:
        notes.append("fastest, within noise")
    if row.oversubscribed:
        notes.append(f"oversubscribed ({row.busy_threads_per_core:.1f} threads/core)")
    if row.errors:
        notes.append(row.first_error[:60])
    return (row.label, f"{row.p50_ms:.2f}", f"{row.p95_ms:.2f}", f"{row.p99_ms:.2f}",
            f"{row.throughput:.1f}", row.spread, ratio, str(row.errors), "; ".join(notes))


def _default(rows: Sequence[Row]) -> Row | None:
    return next((r for r in rows if r.label == "default"), None)


def table(rows: Sequence[Row], choice: Choice) -> str:
    """Markdown: readable in a terminal, pasteable into a document."""
    lines = ["| " + " | ".join(_HEAD) + " |", "|" + " --- |" * len(_HEAD)]
    lines += ["| " + " | ".join(_cells(r, _default(rows), choice)) + " |" for r in rows]
    return "\n".join(lines)


def plot(rows: Sequence[Row], choice: Choice, title: str, budget_ms: float | None) -> Figure:
    """p50 and p99 latency against throughput, one point per setting, labelled, its
    rounds' spread as a bar; the legend below the axes, where it covers no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 6), dpi=100, layout="constrained")
    good = [r for r in rows if r.throughput > 0 and not math.isnan(r.p99_ms)]
    x = [r.throughput for r in good]
    axes.errorbar(x, [r.p99_ms for r in good], fmt="o", capsize=3, label="p99 (bar: req/s "
                  "min-max over rounds)", xerr=[[r.throughput - r.low for r in good],
                                                [r.high - r.throughput for r in good]])
    axes.scatter(x, [r.p50_ms for r in good], label="p50", marker="x")
    middle = (min(x, default=0.0) + max(x, default=0.0)) / 2
    for row in good:  # a label reads towards the middle, so it stays on the figure
        right = row.throughput > middle
        axes.annotate(row.label, (row.throughput, row.p99_ms), fontsize=7,
                      xytext=(-4 if right else 4, 4), textcoords="offset points",
                      ha="right" if right else "left").set_in_layout(False)
    if choice.row is not None:
        axes.scatter([choice.row.throughput], [choice.row.p99_ms], s=200, facecolors="none",
                     edgecolors="red", label="best")
    if budget_ms is not None:
        axes.axhline(budget_ms, color="grey", linestyle="--", label=f"budget {budget_ms} ms")
    axes.set_xlabel("throughput (requests/s, median round)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=4, fontsize=8)
    return figure


def plot_png(rows: Sequence[Row], choice: Choice, title: str, budget_ms: float | None) -> bytes:
    import matplotlib.pyplot as plt

    figure = plot(rows, choice, title, budget_ms)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def page(rows: Sequence[Row], choice: Choice, title: str, png: bytes, about: list[str]) -> str:
    """One self-contained HTML file: the plot inlined, the table, what was measured."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEAD)
    body = "".join(
        "<tr" + (' class="best"' if r is choice.row else "") + ">"
        + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, _default(rows), choice))
        + "</tr>"
        for r in rows)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in about)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,td:last-child{{text-align:left}}tr.best{{background:#e6ffe6}}</style>
</head><body><h1>{html.escape(title)}</h1><ul>{items}</ul>
<img alt="latency against throughput" src="data:image/png;base64,{image}">
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>
"""


def to_json(rows: Sequence[Row], choice: Choice, about: list[str]) -> str:
    def plain(row: Row) -> dict[str, object]:
        data = asdict(row)
        data["setting"] = {"runtime_json": row.setting.runtime_json(),
                           "batching": dict(row.setting.batching)}
        data["throughput"] = {"median": row.throughput, "min": row.low, "max": row.high}
        return data

    return json.dumps({
        "about": about,
        "rows": [plain(r) for r in rows],
        "best": choice.row.label if choice.row else None,
        "reason": choice.reason,
    }, indent=2, allow_nan=True) + "\n"


def write(folder: Path, rows: Sequence[Row], choice: Choice, title: str,
          budget_ms: float | None, about: list[str]) -> dict[str, Path]:
    """Every report file, and the chosen setting's runtime.json and batching parameters
    (none when the default is kept: there is nothing to set)."""
    folder.mkdir(parents=True, exist_ok=True)
    png = plot_png(rows, choice, title, budget_ms)
    files = {
        "table": folder / "report.md",
        "json": folder / "report.json",
        "png": folder / "latency_vs_throughput.png",
        "html": folder / "report.html",
    }
    files["table"].write_text(f"# {title}\n\n" + "\n".join(f"- {a}" for a in about) + "\n\n"
                              + table(rows, choice) + "\n")
    files["json"].write_text(to_json(rows, choice, about))
    files["png"].write_bytes(png)
    files["html"].write_text(page(rows, choice, title, png, about))
    for stale in ("runtime.json", "batching_params.pbtxt"):  # an earlier run's choice
        (folder / stale).unlink(missing_ok=True)
    if choice.row is not None and not choice.keeps_default:
        files["runtime"] = folder / "runtime.json"
        files["runtime"].write_text(json.dumps(choice.row.setting.runtime_json(), indent=2)
                                    + "\n")
        if choice.row.setting.batching:
            files["batching"] = folder / "batching_params.pbtxt"
            files["batching"].write_text(choice.row.setting.batching_text())
    return files
