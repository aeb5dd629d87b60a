"""Where onnx-serving's time goes: its own per-stage histograms, read over one window.

The server times every Predict in its handler (``:tensorflow:serving:request_latency``)
and in each stage (``:onnx_serving:request_stage_latency``: decode, run, encode, and
whatever a batching build adds). Reading the sums and counts as a window opens and
closes gives the mean of each for exactly the measured requests; the client's round
trip minus the handler's time is what gRPC, the thread hand-offs and the client cost.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass

METRICS_PATH = "/monitoring/prometheus/metrics"
MONITORING_CONFIG = f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'
_LINE = re.compile(r'^(?P<metric>[:\w]+)_(?P<part>sum|count)\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')
HANDLER = "handler"  # the whole of Predict as the server timed it


@dataclass(frozen=True)
class Totals:
    """Sum (µs) and count per stage, ``HANDLER`` included."""

    sums: dict[str, float]
    counts: dict[str, float]

    def mean_ms_since(self, before: Totals) -> dict[str, float]:
        means = {}
        for stage, total in self.sums.items():
            count = self.counts.get(stage, 0) - before.counts.get(stage, 0)
            if count > 0:
                means[stage] = (total - before.sums.get(stage, 0.0)) / count / 1000
        return means


def read(rest_port: int, model: str) -> Totals:
    url = f"http://127.0.0.1:{rest_port}{METRICS_PATH}"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("model_name") != model:
            continue
        if match["metric"] == ":onnx_serving:request_stage_latency":
            stage = labels.get("stage", "?")
        elif (match["metric"] == ":tensorflow:serving:request_latency"
              and labels.get("entrypoint") == "GRPC"):
            stage = HANDLER
        else:
            continue
        target = sums if match["part"] == "sum" else counts
        target[stage] = target.get(stage, 0.0) + float(match["value"])
    return Totals(sums, counts)
