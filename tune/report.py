"""A sweep's rows, the best of them, and its reports: a table, a plot, an HTML page, JSON."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from onnx_serving.tune.load import Result
from onnx_serving.tune.settings import Setting


@dataclass(frozen=True)
class Row:
    label: str
    setting: Setting
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput: float  # requests per second
    errors: int
    first_error: str
    busy_threads_per_core: float

    @classmethod
    def of(cls, setting: Setting, result: Result, cpus: int, label: str = "") -> Row:
        return cls(label or setting.label, setting, result.percentile_ms(50),
                   result.percentile_ms(95), result.percentile_ms(99), result.throughput,
                   result.errors,
                   result.first_error, setting.busy_threads(cpus) / cpus)

    @property
    def oversubscribed(self) -> bool:
        return self.busy_threads_per_core > 1


def best(rows: list[Row], budget_ms: float | None) -> Row | None:
    """The highest throughput without errors whose p99 is within the budget (if any)."""
    fit = [r for r in rows if not r.errors and r.throughput > 0
           and (budget_ms is None or r.p99_ms <= budget_ms)]
    return max(fit, key=lambda r: r.throughput, default=None)


_HEAD = ("setting", "p50 ms", "p95 ms", "p99 ms", "req/s", "vs default", "errors", "note")


def _cells(row: Row, default: Row | None, chosen: Row | None) -> tuple[str, ...]:
    ratio = (f"{row.throughput / default.throughput:.2f}x"
             if default is not None and default.throughput else "-")
    notes = []
    if row is chosen:
        notes.append("BEST")
    if row.oversubscribed:
        notes.append(f"oversubscribed ({row.busy_threads_per_core:.1f} threads/core)")
    if row.errors:
        notes.append(row.first_error[:60])
    return (row.label, f"{row.p50_ms:.2f}", f"{row.p95_ms:.2f}", f"{row.p99_ms:.2f}",
            f"{row.throughput:.1f}", ratio, str(row.errors), "; ".join(notes))


def table(rows: list[Row], chosen: Row | None) -> str:
    """Markdown: readable in a terminal, pasteable into a document."""
    default = next((r for r in rows if r.label == "default"), None)
    lines = ["| " + " | ".join(_HEAD) + " |", "|" + " --- |" * len(_HEAD)]
    lines += ["| " + " | ".join(_cells(r, default, chosen)) + " |" for r in rows]
    return "\n".join(lines)


def plot_png(rows: list[Row], chosen: Row | None, title: str, budget_ms: float | None) -> bytes:
    """p50 and p99 latency against throughput, one point per setting, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=100)
    good = [r for r in rows if r.throughput > 0 and not math.isnan(r.p99_ms)]
    axes.scatter([r.throughput for r in good], [r.p99_ms for r in good], label="p99",
                 marker="o")
    axes.scatter([r.throughput for r in good], [r.p50_ms for r in good], label="p50",
                 marker="x")
    for row in good:
        axes.annotate(row.label, (row.throughput, row.p99_ms), fontsize=7,
                      xytext=(4, 4), textcoords="offset points")
    if chosen is not None:
        axes.scatter([chosen.throughput], [chosen.p99_ms], s=200, facecolors="none",
                     edgecolors="red", label="best")
    if budget_ms is not None:
        axes.axhline(budget_ms, color="grey", linestyle="--", label=f"budget {budget_ms} ms")
    axes.set_xlabel("throughput (requests/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def page(rows: list[Row], chosen: Row | None, title: str, png: bytes, about: list[str]) -> str:
    """One self-contained HTML file: the plot inlined, the table, what was measured."""
    default = next((r for r in rows if r.label == "default"), None)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEAD)
    body = "".join(
        "<tr" + (' class="best"' if r is chosen else "") + ">"
        + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r, default, chosen)) + "</tr>"
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


def to_json(rows: list[Row], chosen: Row | None, about: list[str]) -> str:
    def plain(row: Row) -> dict[str, object]:
        data = asdict(row)
        data["setting"] = {"runtime_json": row.setting.runtime_json(),
                           "batching": dict(row.setting.batching)}
        return data

    return json.dumps({
        "about": about,
        "rows": [plain(r) for r in rows],
        "best": chosen.label if chosen else None,
    }, indent=2, allow_nan=True) + "\n"


def write(folder: Path, rows: list[Row], chosen: Row | None, title: str,
          budget_ms: float | None, about: list[str]) -> dict[str, Path]:
    """Every report file, and the best setting's runtime.json and batching parameters."""
    folder.mkdir(parents=True, exist_ok=True)
    png = plot_png(rows, chosen, title, budget_ms)
    files = {
        "table": folder / "report.md",
        "json": folder / "report.json",
        "png": folder / "latency_vs_throughput.png",
        "html": folder / "report.html",
    }
    files["table"].write_text(f"# {title}\n\n" + "\n".join(f"- {a}" for a in about) + "\n\n"
                              + table(rows, chosen) + "\n")
    files["json"].write_text(to_json(rows, chosen, about))
    files["png"].write_bytes(png)
    files["html"].write_text(page(rows, chosen, title, png, about))
    if chosen is not None:
        files["runtime"] = folder / "runtime.json"
        files["runtime"].write_text(json.dumps(chosen.setting.runtime_json(), indent=2) + "\n")
        if chosen.setting.batching:
            files["batching"] = folder / "batching_params.pbtxt"
            files["batching"].write_text(chosen.setting.batching_text())
    return files
