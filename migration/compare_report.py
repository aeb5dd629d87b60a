"""The report of `onnx-serving compare`, for a person and for CI.

Everything is drawn from the summary that becomes ``report.json``, so the Markdown
or HTML page can never show figures the JSON lacks. The page puts the verdict first,
then the agreement table, the problems behind any failure, the latency table and a
plot of both sides' latency distributions (``latency.png``, drawn without pyplot so
no global backend is touched).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"baseline": "#1f77b4", "candidate": "#e8590c"}
PLOT = "latency.png"
NA = "-"


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


# A report is a list of blocks: ("h1" | "h2" | "p", text), ("ul", [items]),
# ("table", Table) or ("img", file name). Text may hold `code` and **bold** spans.
Block = tuple[str, Any]


def write_report(
    summary: dict[str, Any],
    latencies_ms: Mapping[str, Sequence[float]],
    report_dir: Path,
    fmt: str,
) -> dict[str, Path]:
    """Writes report.{md,html}, report.json and (with latencies) latency.png; returns them."""
    report_dir.mkdir(parents=True, exist_ok=True)
    files = {"report": report_dir / f"report.{fmt}", "json": report_dir / "report.json"}
    if any(latencies_ms.values()):
        files["plot"] = report_dir / PLOT
        _plot(latencies_ms, summary["latency"]["concurrency"], files["plot"])
    summary["files"] = {name: path.name for name, path in files.items()}
    files["json"].write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    blocks = _blocks(summary)
    if fmt == "html":
        files["report"].write_text(_html(blocks, report_dir))
    else:
        files["report"].write_text(_markdown(blocks))
    return files


# --- content ----------------------------------------------------------------------------


def _blocks(summary: Mapping[str, Any]) -> list[Block]:
    sides = summary["sides"]
    title = summary["model_name"] or sides["candidate"].get("model_name", "")
    blocks: list[Block] = [("h1", f"Comparison of `{title}`"), ("p", _verdict(summary))]
    blocks.append(("table", _sides_table(sides)))
    blocks.append(("p", _requests_line(summary["requests"])))
    if summary["requests"]["notes"]:
        blocks.append(("ul", summary["requests"]["notes"]))

    tol = summary["tolerance"]
    rule = (f"Numbers agree when |candidate - baseline| ≤ atol + rtol·|baseline| "
            f"(atol {tol['atol']:g}, rtol {tol['rtol']:g}); strings and integers must be equal")
    if tol["top_k"]:
        rule += f"; class scores (`top_k`) need the same top-{tol['top_k']} classes in every row"
    blocks += [("h2", "Agreement"), ("p", rule + "."), ("table", _agreement_table(summary))]
    problems = _problems(summary)
    if problems:
        blocks += [("p", "**Why it fails**"), ("ul", problems)]
    if summary["request_failures"]:
        blocks += [("p", "**Refused requests**"), ("table", _failures_table(summary))]

    latency = summary["latency"]
    blocks.append(("h2", "Latency"))
    if latency is None:
        blocks.append(("p", "Not measured."))
        return blocks
    blocks += [("p", _latency_line(latency)), ("table", _latency_table(latency))]
    if sides["baseline"]["kind"] == "saved_model":
        blocks.append(("p", "The baseline runs in TensorFlow inside the comparing process: "
                            "its latency has no RPC or serialization in it, so the ratio "
                            "overstates what the candidate costs."))
    if "plot" in summary["files"]:
        blocks.append(("img", summary["files"]["plot"]))
    return blocks


def _verdict(summary: Mapping[str, Any]) -> str:
    outputs = summary["outputs"]
    if summary["agreement"]:
        return f"**✅ Agreement: PASS**: {_count(len(outputs), 'output')} checked, all agree."
    failing = [f"`{o['alias']}`" for o in outputs if not o["passed"]]
    reasons = []
    if failing:
        reasons.append("outputs that differ: " + ", ".join(failing))
    refused = [f for f in summary["request_failures"] if not f["both_refused_alike"]]
    if refused:
        reasons.append(f"{len(refused)} requests answered by one side only")
    if not summary["requests"]["answered_by_both"]:
        reasons.append("no request was answered by both sides")
    return "**❌ Agreement: FAIL**: " + "; ".join(reasons) + "."


def _sides_table(sides: Mapping[str, Mapping[str, Any]]) -> Table:
    rows = [
        ["served by", *(_served_by(s) for s in sides.values())],
        ["model", *(f"`{s['model_name']}`" if s.get("model_name") else NA
                    for s in sides.values())],
        ["version asked", *(_version_asked(s) for s in sides.values())],
        ["version that answered", *(", ".join(map(str, s["versions_answered"])) or NA
                                    if "versions_answered" in s else NA
                                    for s in sides.values())],
        ["signature", *(f"`{s['signature_name']}`" for s in sides.values())],
    ]
    return Table(["", *sides], rows)


def _served_by(side: Mapping[str, Any]) -> str:
    if side["kind"] == "saved_model":
        return f"SavedModel `{side['path']}` in TensorFlow {side['tensorflow']} (in-process)"
    return f"`{side['address']}` (gRPC)"


def _version_asked(side: Mapping[str, Any]) -> str:
    if side.get("version") is not None:
        return str(side["version"])
    if side.get("label"):
        return f"label `{side['label']}`"
    return "latest" if side["kind"] == "grpc" else NA


def _requests_line(requests: Mapping[str, Any]) -> str:
    source = ("generated from the baseline's metadata" if requests["source"] == "generated"
              else f"from `{requests['source']}`")
    return (f"{requests['count']} requests {source}; "
            f"{requests['answered_by_both']} answered by both sides.")


def _agreement_table(summary: Mapping[str, Any]) -> Table:
    top_k = summary["tolerance"]["top_k"]
    rows = []
    for out in summary["outputs"]:
        dtypes = sorted(set(out["dtype"].values())) or [NA]
        top = (f"{out['top_k_rows_agreeing']} of {out['top_k_rows']}"
               if out["check"] == "top_k" else NA)
        rows.append([
            f"`{out['alias']}`",
            "✅ pass" if out["passed"] else "❌ **FAIL**",
            {"top_k": f"top-{top_k}", "": NA}.get(out["check"], out["check"]),
            " / ".join(dtypes),
            _shape(out["shape"]),
            _error(out["max_abs_error"]),
            _error(out["max_rel_error"]),
            f"{out['mismatched_elements']} of {out['elements']}",
            top,
        ])
    headers = ["output", "result", "check", "dtype", "shape", "max abs error",
               "max rel error", "elements differing", "top-k rows agreeing"]
    return Table(headers, rows)


def _problems(summary: Mapping[str, Any]) -> list[str]:
    items = []
    for out in summary["outputs"]:
        if out["passed"]:
            continue
        alias = f"`{out['alias']}`"
        worst = out["worst"]
        if out["check"] == "top_k":
            first = out["top_k_first_difference"]
            if first is not None:
                items.append(
                    f"{alias}: top-{summary['tolerance']['top_k']} classes differ in "
                    f"{out['top_k_rows'] - out['top_k_rows_agreeing']} of {out['top_k_rows']} "
                    f"rows; first in request {first['request']}, row {first['row']}: "
                    f"baseline {first['baseline']}, candidate {first['candidate']}"
                )
        elif worst is not None:
            if "abs_error" not in worst:
                what = "first difference"
            elif out["check"] == "tolerance":
                what = f"largest error outside tolerance, {_error(worst['abs_error'])},"
            else:
                what = f"largest difference, {_error(worst['abs_error'])},"
            items.append(
                f"{alias}: {out['mismatched_elements']} of {out['elements']} elements differ; "
                f"{what} in request {worst['request']} at {worst['index']}: "
                f"baseline {_value(worst['baseline'])}, candidate {_value(worst['candidate'])}"
            )
        items += [f"{alias}: {problem}" for problem in out["problems"]]
        if out["more_problems"]:
            items.append(f"{alias}: {out['more_problems']} more problems like these")
    return items


def _failures_table(summary: Mapping[str, Any]) -> Table:
    rows = [
        [str(f["request"]), _cell(f["baseline"] or "answered"),
         _cell(f["candidate"] or "answered"), "yes" if f["both_refused_alike"] else "**no**"]
        for f in summary["request_failures"]
    ]
    return Table(["request", "baseline", "candidate", "alike"], rows)


def _latency_line(latency: Mapping[str, Any]) -> str:
    per = (f"{latency['iterations_per_phase']} requests" if latency["iterations_per_phase"]
           else f"{latency['seconds_per_phase']:g} s")
    order = " ".join("A" if side == "baseline" else "B" for side in latency["order"])
    return (f"Concurrency {latency['concurrency']}, {latency['rounds']} rounds of {per} per "
            f"side, in the order {order} (A baseline, B candidate); latency is per request, "
            "as the client sees it.")


def _latency_table(latency: Mapping[str, Any]) -> Table:
    keys = ["p50_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_rps"]
    rows = []
    for side in ("baseline", "candidate"):
        stats = latency[side]
        rows.append([side, str(stats["requests"]), str(stats["errors"]),
                     *(_ms(stats[k]) for k in keys[:-1]), _rate(stats["throughput_rps"])])
    ratio = latency["ratio"]
    rows.append(["**candidate / baseline**", "", "", *(_ratio(ratio[k]) for k in keys)])
    headers = ["", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "mean ms",
               "throughput req/s"]
    return Table(headers, rows)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shape(shape: list[int | None] | None) -> str:
    if shape is None:
        return "varies"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _error(value: float | str | None) -> str:
    if value is None:
        return NA
    if isinstance(value, str):
        return value
    return "0" if value == 0 else f"{value:.2e}"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, str):
        return f"`{value!r}`"
    return str(value)


def _ms(value: float | None) -> str:
    return NA if value is None else f"{value:.3f}"


def _rate(value: float | None) -> str:
    return NA if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


def _cell(text: str) -> str:
    return " ".join(text.split())


# --- rendering --------------------------------------------------------------------------


def _markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for kind, content in blocks:
        if kind == "h1":
            lines += [f"# {content}", ""]
        elif kind == "h2":
            lines += [f"## {content}", ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "ul":
            lines += [f"- {_cell(item)}" for item in content] + [""]
        elif kind == "img":
            lines += [f"![Latency distribution of both sides]({content})", ""]
        elif kind == "table":
            lines += [*_markdown_table(content), ""]
    return "\n".join(lines)


def _markdown_table(table: Table) -> list[str]:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [row(table.headers), row(["---"] * len(table.headers)),
            *(row(cells) for cells in table.rows)]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 0.2em; }
img { max-width: 100%; }
"""


def _html(blocks: Sequence[Block], report_dir: Path) -> str:
    """One self-contained file: the plot is embedded, so the page can be mailed alone."""
    parts = ["<!doctype html>", '<html><head><meta charset="utf-8">',
             f"<title>{html.escape(_plain(blocks[0][1]))}</title>",
             f"<style>{_STYLE}</style></head><body>"]
    for kind, content in blocks:
        if kind in ("h1", "h2", "p"):
            tag = kind
            parts.append(f"<{tag}>{_inline(content)}</{tag}>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in content) + "</ul>")
        elif kind == "img":
            data = base64.b64encode((report_dir / content).read_bytes()).decode()
            parts.append(f'<img alt="Latency distribution of both sides" '
                         f'src="data:image/png;base64,{data}">')
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in content.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                for row in content.rows
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _plain(text: str) -> str:
    return text.replace("`", "").replace("**", "")


# --- plot -------------------------------------------------------------------------------


def _plot(latencies_ms: Mapping[str, Sequence[float]], concurrency: int, path: Path) -> None:
    """Histogram (up to the 99th percentile, where most requests are) beside the ECDF
    (every request, tail included), both sides overlaid in the same colours."""
    # Only a run that measured latency needs matplotlib.
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    data = {side: np.sort(np.asarray(v, dtype=np.float64)) for side, v in latencies_ms.items()
            if len(v)}
    everything = np.concatenate(list(data.values()))
    low, high = float(everything.min()), float(np.percentile(everything, 99))
    if high <= low:
        high = low + max(low * 0.01, 1e-3)
    bins = np.linspace(low, high, 60)

    fig = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    hist, ecdf = fig.subplots(1, 2)
    for side, values in data.items():
        p50, p99 = np.percentile(values, [50, 99])
        label = f"{side}: p50 {p50:.3f} ms, p99 {p99:.3f} ms"
        hist.hist(values[values <= high], bins=bins, color=COLORS.get(side), alpha=0.55,
                  label=label)
        hist.axvline(p50, color=COLORS.get(side), linestyle="--", linewidth=1.2)
        ecdf.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                  color=COLORS.get(side), linewidth=1.6, label=side)
    hist.set(title="Latency histogram (to p99; dashed: p50)", xlabel="latency (ms)",
             ylabel="requests")
    hist.legend(loc="best", fontsize="small", framealpha=0.9)
    for q in (0.5, 0.95, 0.99):
        ecdf.axhline(q, color="#888", linestyle=":", linewidth=0.8)
        ecdf.annotate(f"p{round(q * 100)}", (1.0, q), xycoords=("axes fraction", "data"),
                      xytext=(3, 0), textcoords="offset points", va="center", fontsize="small",
                      color="#555")
    if float(everything.max()) / max(low, 1e-9) > 20:
        # Log scale for long tails, labelled 0.5, 1, 2, 5, ... rather than powers of ten.
        ecdf.set_xscale("log")
        ecdf.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ecdf.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ecdf.xaxis.set_minor_formatter(NullFormatter())
    ecdf.set(title="Cumulative distribution (all requests)", xlabel="latency (ms)",
             ylabel="fraction of requests at or below", ylim=(0, 1.02))
    ecdf.legend(loc="lower right", fontsize="small")
    ecdf.grid(alpha=0.3)
    fig.suptitle(f"Per-request latency, concurrency {concurrency}")
    fig.savefig(path)
