"""What a team reads: Prometheus series and the running figures of /v1/models/<m>/shadow.

Series (in ``server/metrics.py``'s style: microseconds, TF's latency buckets, on the
server's one registry), by model, the version of ours that answered, and output:

- ``:onnx_serving:shadow_comparisons{model_name,version,result}`` agree | disagree
- ``:onnx_serving:shadow_output_comparisons{model_name,version,output,result}``
- ``:onnx_serving:shadow_max_abs_error`` / ``shadow_max_rel_error`` histograms
  ``{model_name,version,output}``: each compared answer's largest error
- ``:onnx_serving:shadow_latency{model_name,side}`` baseline | onnx, µs
- ``:onnx_serving:shadow_drops{model_name,reason}``: requests not compared (in_flight,
  memory: over the bounds; baseline_timeout, baseline_unavailable, onnx_timeout)
- ``:onnx_serving:shadow_mode{model_name,mode}``: 1 for the mode in force
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from onnx_serving.server.api.shadow.config import MODES, Mode
from onnx_serving.server.api.shadow.judge import Verdict
from onnx_serving.server.metrics import TF_LATENCY_BUCKETS

_ERROR_BUCKETS = [0.0, *(10.0**e for e in range(-9, 4))]
LATENCY_WINDOW = 1000  # the last answers each side's p50/p99 are read from


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.comparisons = Counter(
            ":onnx_serving:shadow_comparisons",
            "Requests answered by both the baseline and ours, by agreement.",
            ["model_name", "version", "result"], registry=r,
        )
        self.outputs = Counter(
            ":onnx_serving:shadow_output_comparisons",
            "Outputs compared between the baseline and ours, by agreement.",
            ["model_name", "version", "output", "result"], registry=r,
        )
        self.max_abs = Histogram(
            ":onnx_serving:shadow_max_abs_error",
            "Largest |ours - baseline| of each compared output.",
            ["model_name", "version", "output"], buckets=_ERROR_BUCKETS, registry=r,
        )
        self.max_rel = Histogram(
            ":onnx_serving:shadow_max_rel_error",
            "Largest |ours - baseline| / |baseline| of each compared output.",
            ["model_name", "version", "output"], buckets=_ERROR_BUCKETS, registry=r,
        )
        self.latency = Histogram(
            ":onnx_serving:shadow_latency",
            "Wall time (in microseconds) of each side's answer to a compared request.",
            ["model_name", "side"], buckets=TF_LATENCY_BUCKETS, registry=r,
        )
        self.drops = Counter(
            ":onnx_serving:shadow_drops", "Sampled requests not compared, by reason.",
            ["model_name", "reason"], registry=r,
        )
        self.mode = Gauge(
            ":onnx_serving:shadow_mode", "1 for the shadowing mode in force.",
            ["model_name", "mode"], registry=r,
        )

    def set_mode(self, model: str, mode: Mode) -> None:
        for m in MODES:
            self.mode.labels(model, m).set(1 if m == mode else 0)


class Figures:
    """One model's running figures since its shadowing was configured (thread-safe)."""

    def __init__(self, model: str, metrics: ShadowMetrics) -> None:
        self._model = model
        self._metrics = metrics
        self._lock = threading.Lock()
        self.compared = self.agreed = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self.outputs: dict[str, dict[str, Any]] = {}
        self.latency = {side: collections.deque[float](maxlen=LATENCY_WINDOW)
                        for side in ("baseline", "onnx")}
        self.last_disagreement = ""

    def drop(self, reason: str) -> None:
        self._metrics.drops.labels(self._model, reason).inc()
        with self._lock:
            self.drops[reason] += 1

    def took(self, side: str, seconds: float) -> None:
        self._metrics.latency.labels(self._model, side).observe(seconds * 1e6)
        with self._lock:
            self.latency[side].append(seconds)

    def add(self, version: str, verdict: Verdict) -> None:
        m, name = self._metrics, self._model
        m.comparisons.labels(name, version, _result(verdict.agreed)).inc()
        for alias, v in verdict.outputs.items():
            m.outputs.labels(name, version, alias, _result(v.agreed)).inc()
            if v.max_abs is not None:
                m.max_abs.labels(name, version, alias).observe(v.max_abs)
            if v.max_rel is not None:
                m.max_rel.labels(name, version, alias).observe(v.max_rel)
        with self._lock:
            self.compared += 1
            self.agreed += verdict.agreed
            if not verdict.agreed:
                self.last_disagreement = verdict.reason
            for alias, v in verdict.outputs.items():
                out = self.outputs.setdefault(alias, {
                    "check": v.check, "compared": 0, "disagreed": 0,
                    "max_abs_error": None, "max_rel_error": None,
                })
                out["compared"] += 1
                out["disagreed"] += not v.agreed
                for key, value in (("max_abs_error", v.max_abs), ("max_rel_error", v.max_rel)):
                    if value is not None and (out[key] is None or value > out[key]):
                        out[key] = value

    def p99(self, side: str) -> float | None:
        with self._lock:
            window = list(self.latency[side])
        return float(np.percentile(window, 99)) if window else None

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            latency = {side: _percentiles(list(w)) for side, w in self.latency.items()}
            return {
                "compared": self.compared,
                "agreed": self.agreed,
                "disagreed": self.compared - self.agreed,
                "agreement": self.agreed / self.compared if self.compared else None,
                "last_disagreement": self.last_disagreement,
                "drops": dict(self.drops),
                "latency_ms": latency,
                "outputs": {a: {k: _plain(v) for k, v in o.items()}
                            for a, o in sorted(self.outputs.items())},
            }


def _result(agreed: bool) -> str:
    return "agree" if agreed else "disagree"


def _percentiles(window: list[float]) -> dict[str, float | int | None]:
    if not window:
        return {"p50": None, "p99": None, "count": 0}
    p50, p99 = np.percentile(window, [50, 99]) * 1000
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "count": len(window)}


def _plain(value: Any) -> Any:
    """JSON has no infinity or NaN."""
    return str(value) if isinstance(value, float) and not np.isfinite(value) else value
