"""Prometheus metrics under TF Serving's names, plus onnx-serving's own.

TF Serving's exporter names each metric after its TensorFlow monitoring path
(``/tensorflow/serving/request_count`` → ``:tensorflow:serving:request_count``),
counters without a ``_total`` suffix; dashboards built on it keep working
because the same names, labels, units (microseconds) and buckets are served
here. Values are kept by prometheus-client; ``render`` prints them in TF's
naming.

onnx-serving's own metrics (``:onnx_serving:...``) add per-stage request
latency, load/unload/warmup durations and failures, the execution providers
in use, and the versions available per model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from onnx_serving.server.errors import Code

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# TF Serving's request and runtime latency buckets: 10 µs * 1.8^i, 33 of them.
_TF_BUCKETS = [10 * 1.8**i for i in range(33)]
# Loads and warmups take seconds to minutes: 1 ms * 2^i up to about 9 hours.
_LOAD_BUCKETS = [1e3 * 2**i for i in range(25)]
_BATCH_BUCKETS = [2**i for i in range(15)]

GRPC, REST = "GRPC", "REST"


@dataclass(frozen=True)
class VersionCounts:
    model_name: str
    available: int
    providers: dict[str, int]  # provider → available versions using it


class Metrics:
    """Every metric the server exports; one per app, passed to who records."""

    def __init__(self, versions: Callable[[], Iterable[VersionCounts]] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "status"], registry=r,
        )
        self._request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=_TF_BUCKETS, registry=r,
        )
        self._runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=_TF_BUCKETS, registry=r,
        )
        self._warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ["model_path", "status"], buckets=_LOAD_BUCKETS, registry=r,
        )
        self._stage_latency = Histogram(
            ":onnx_serving:request_stage_latency",
            "Wall time (in microseconds) of each stage of a request: decode, run, encode.",
            ["model_name", "entrypoint", "stage"], buckets=_TF_BUCKETS, registry=r,
        )
        self._load_latency = Histogram(
            ":onnx_serving:model_load_latency",
            "Wall time (in microseconds) to load a model version, warmup included.",
            ["model_name", "status"], buckets=_LOAD_BUCKETS, registry=r,
        )
        self._unload_latency = Histogram(
            ":onnx_serving:model_unload_latency",
            "Wall time (in microseconds) to unload a model version, waiting for its "
            "requests in flight included.",
            ["model_name"], buckets=_LOAD_BUCKETS, registry=r,
        )
        batching = ":tensorflow:serving:batching_session:"
        self._processed_batch = Histogram(
            batching + "processed_batch_size",
            "Tracks the batch size distribution on processing, padding included.",
            ["thread_pool_name"], buckets=_BATCH_BUCKETS, registry=r,
        )
        self._padding = Histogram(
            batching + "padding_size", "Tracks the padding size distribution on batches.",
            ["thread_pool_name"], buckets=_BATCH_BUCKETS, registry=r,
        )
        self._queuing = Histogram(
            batching + "queuing_latency",
            "Tracks the latency (in microseconds) from a task's enqueuing to its batch's run.",
            ["thread_pool_name"], buckets=_TF_BUCKETS, registry=r,
        )
        self._batches = Counter(
            batching + "wrapped_run_count", "Tracks the number of batches run.",
            ["thread_pool_name"], registry=r,
        )
        self._batch_size = Histogram(
            ":onnx_serving:batch_size",
            "Requests' rows per batch, before padding: is batching merging anything?",
            ["model_name"], buckets=_BATCH_BUCKETS, registry=r,
        )
        if versions is not None:
            r.register(_VersionCollector(versions))
        # prometheus-client's labels() takes a lock and checks its labels on every call:
        # microseconds on each request's path. The labelled children are kept here.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def request(self, model: str, api: str, entrypoint: str, code: Code, seconds: float) -> None:
        """One finished request. As in TF Serving, latency counts successes only."""
        self._child(self._requests, model, code.name).inc()
        if code is Code.OK:
            self._child(self._request_latency, model, api, entrypoint).observe(seconds * 1e6)

    def stage(self, model: str, entrypoint: str, stage: str, seconds: float) -> None:
        self._child(self._stage_latency, model, entrypoint, stage).observe(seconds * 1e6)
        if stage == "run":
            self._child(self._runtime_latency, model, "Predict", "ONNXRuntime").observe(
                seconds * 1e6
            )

    def batch(
        self, model: str, pool: str, rows: int, padded_rows: int, queue_seconds: list[float]
    ) -> None:
        """One batch run: its size, padding, and each task's wait (the "queue" stage)."""
        self._child(self._processed_batch, pool).observe(padded_rows)
        self._child(self._padding, pool).observe(padded_rows - rows)
        self._child(self._batches, pool).inc()
        self._child(self._batch_size, model).observe(rows)
        queuing = self._child(self._queuing, pool)
        queue_stage = self._child(self._stage_latency, model, "BATCH", "queue")
        for seconds in queue_seconds:
            queuing.observe(seconds * 1e6)
            queue_stage.observe(seconds * 1e6)

    def warmup(self, model_path: str, ok: bool, seconds: float) -> None:
        self._warmup_latency.labels(model_path, "OK" if ok else "FAILED").observe(seconds * 1e6)

    def load(self, model: str, ok: bool, seconds: float) -> None:
        self._load_latency.labels(model, "OK" if ok else "FAILED").observe(seconds * 1e6)

    def unload(self, model: str, seconds: float) -> None:
        self._unload_latency.labels(model).observe(seconds * 1e6)

    def render(self) -> bytes:
        return "".join(_exposition(self.registry.collect())).encode("utf-8")


class StageClock:
    """Times consecutive stages of one request; a no-op without an observer."""

    def __init__(self, observe: Callable[[str, float], None] | None) -> None:
        self._observe = observe
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self._observe is not None:
            now = time.perf_counter()
            self._observe(stage, now - self._last)
            self._last = now


class _VersionCollector(Collector):
    """Read at scrape time from the manager, so it can never drift from it."""

    def __init__(self, versions: Callable[[], Iterable[VersionCounts]]) -> None:
        self._versions = versions

    def describe(self) -> list[Metric]:
        """Nothing to read at registration: the manager may not exist yet."""
        return []

    def collect(self) -> Iterator[Metric]:
        available = GaugeMetricFamily(
            ":onnx_serving:model_versions_available", "Versions of a model available.",
            labels=["model_name"],
        )
        providers = GaugeMetricFamily(
            ":onnx_serving:execution_provider",
            "Available versions of a model running on each ONNX Runtime execution provider.",
            labels=["model_name", "provider"],
        )
        for counts in self._versions():
            available.add_metric([counts.model_name], counts.available)
            for provider, number in counts.providers.items():
                providers.add_metric([counts.model_name, provider], number)
        yield available
        yield providers


def _exposition(families: Iterable[Metric]) -> Iterator[str]:
    """Prometheus text format, named as TF Serving names metrics (no ``_total``, no
    ``_created``)."""
    for family in families:
        kind = family.type if family.type in ("counter", "gauge", "histogram") else "untyped"
        yield f"# HELP {family.name} {family.documentation}\n# TYPE {family.name} {kind}\n"
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = family.name if kind == "counter" else sample.name
            labels = ",".join(
                f'{k}="{_bucket_bound(v) if k == "le" else _escape(v)}"'
                for k, v in sample.labels.items()
            )
            yield f"{name}{{{labels}}} {floatToGoString(sample.value)}\n" if labels else \
                f"{name} {floatToGoString(sample.value)}\n"


def _bucket_bound(value: str) -> str:
    """A bucket's upper bound as TF prints a double (six significant digits): ``32.4``,
    not ``32.400000000000006``."""
    return value if value == "+Inf" else f"{float(value):.6g}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
