"""Prometheus metrics under TF Serving's names, plus onnx-serving's own.

TF Serving's exporter names each metric after its TensorFlow monitoring path
(``/tensorflow/serving/request_count`` → ``:tensorflow:serving:request_count``),
counters without a ``_total`` suffix; dashboards built on it keep working
because the same names, labels, units (microseconds) and buckets are served
here. Values are kept by prometheus-client; ``render`` prints them in TF's
naming.

onnx-serving's own metrics (``:onnx_serving:...``) add requests and latency
by the model version that answered (canary traffic), per-stage request
latency, load/unload/warmup durations and failures, the execution providers
in use, the versions available, and the requests in flight and waiting for a
batch per model (autoscaling signals).

With --num_workers, every worker records into prometheus-client's
multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by the parent) and any
worker's scrape merges them all: one view of the whole server. The live
gauges, read from the manager at scrape time in one process, are then
published by each worker every ``LIVE_PUBLISH_SECONDS`` and combined (in
flight and queue depth summed, versions the least any worker has).
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from onnx_serving.protos.tensorflow_serving.config import monitoring_config_pb2
from onnx_serving.server.errors import Code
from onnx_serving.server.repository.model_config import read_text_proto

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# TF Serving's request and runtime latency buckets: 10 µs * 1.8^i, 33 of them.
TF_LATENCY_BUCKETS = [10 * 1.8**i for i in range(33)]
# Loads and warmups take seconds to minutes: 1 ms * 2^i up to about 9 hours.
_LOAD_BUCKETS = [1e3 * 2**i for i in range(25)]
_BATCH_BUCKETS = [2**i for i in range(15)]

GRPC, REST = "GRPC", "REST"
# One request a version answered: its status and seconds.
VersionRecorder = Callable[[Code, float], None]
# Where prometheus-client keeps every process's values in multiprocess mode.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
LIVE_PUBLISH_SECONDS = 1.0
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


def read_monitoring_config(path: Path) -> str | None:
    """The path metrics are served at on the REST port (--monitoring_config_file), or None
    when Prometheus is off."""
    message = monitoring_config_pb2.MonitoringConfig()
    read_text_proto(path, message, "monitoring config")
    prometheus = message.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or DEFAULT_METRICS_PATH


@dataclass(frozen=True)
class VersionCounts:
    """One model's live state, read at scrape time."""

    model_name: str
    available: int
    providers: dict[str, int]  # provider → available versions using it
    in_flight: int = 0  # requests holding one of its versions
    batch_queue_depth: int = 0  # requests waiting for a batch


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
            ["model_name", "API", "entrypoint"], buckets=TF_LATENCY_BUCKETS, registry=r,
        )
        self._runtime_latency = Histogram(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"], buckets=TF_LATENCY_BUCKETS, registry=r,
        )
        self._warmup_latency = Histogram(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ["model_path", "status"], buckets=_LOAD_BUCKETS, registry=r,
        )
        self._stage_latency = Histogram(
            ":onnx_serving:request_stage_latency",
            "Wall time (in microseconds) of each stage of a request: decode, run, encode.",
            ["model_name", "entrypoint", "stage"], buckets=TF_LATENCY_BUCKETS, registry=r,
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
            ["thread_pool_name"], buckets=TF_LATENCY_BUCKETS, registry=r,
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
        # By the version that answered: a label of few values (the versions served), each
        # resolved once per version (``version``), never per request.
        self._version_requests = Counter(
            ":onnx_serving:version_request_count",
            "Requests answered by each model version, by status.",
            ["model_name", "version", "status"], registry=r,
        )
        self._version_latency = Histogram(
            ":onnx_serving:version_request_latency",
            "Wall time (in microseconds) of the successful requests each model version "
            "answered, from taking the version to the encoded answer.",
            ["model_name", "version"], buckets=TF_LATENCY_BUCKETS, registry=r,
        )
        self._versions: dict[tuple[str, int], VersionRecorder] = {}
        self._request_log = Counter(
            ":onnx_serving:request_log_records",
            "Sampled requests written to the request log, or dropped (queue full, write "
            "failed).",
            ["model_name", "outcome"], registry=r,
        )
        self._multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV)
        self._shared: _SharedGauges | None = None
        if versions is not None:
            if self._multiprocess_dir:
                self._shared = _SharedGauges(versions)
            else:
                r.register(_LiveCollector(versions))
        # prometheus-client's labels() takes a lock and checks its labels on every call:
        # microseconds on each request's path. The labelled children are kept here.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def _observer(self, metric: Histogram, *labels: str) -> Callable[[float], None]:
        """The labelled child's ``observe``, made once per label set (see ``_fast_observe``)."""
        key = (metric, labels, "observe")
        observe = self._children.get(key)
        if observe is None:
            observe = self._children.setdefault(key, _fast_observe(metric.labels(*labels)))
        return observe  # type: ignore[no-any-return]

    def request(self, model: str, api: str, entrypoint: str, code: Code, seconds: float) -> None:
        """One finished request. As in TF Serving, latency counts successes only."""
        self._child(self._requests, model, code.name).inc()
        if code is Code.OK:
            self._observer(self._request_latency, model, api, entrypoint)(seconds * 1e6)

    def version(self, model: str, version: int) -> VersionRecorder:
        """What records the requests one version answers (status, seconds), made once per
        model version."""
        recorder = self._versions.get((model, version))
        if recorder is None:
            label = str(version)
            latency = self._observer(self._version_latency, model, label)
            requests = self._version_requests

            def record(code: Code, seconds: float) -> None:
                self._child(requests, model, label, code.name).inc()
                if code is Code.OK:
                    latency(seconds * 1e6)

            recorder = self._versions.setdefault((model, version), record)
        return recorder

    def stage(
        self, model: str, entrypoint: str, stage: str, seconds: float, api: str = "Predict"
    ) -> None:
        micros = seconds * 1e6
        self._observer(self._stage_latency, model, entrypoint, stage)(micros)
        if stage == "run":
            self._observer(self._runtime_latency, model, api, "ONNXRuntime")(micros)

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

    def request_log(self, model: str, written: bool) -> None:
        self._child(self._request_log, model, "written" if written else "dropped").inc()

    def warmup(self, model_path: str, ok: bool, seconds: float) -> None:
        self._warmup_latency.labels(model_path, "OK" if ok else "FAILED").observe(seconds * 1e6)

    def load(self, model: str, ok: bool, seconds: float) -> None:
        self._load_latency.labels(model, "OK" if ok else "FAILED").observe(seconds * 1e6)

    def unload(self, model: str, seconds: float) -> None:
        self._unload_latency.labels(model).observe(seconds * 1e6)

    def render(self) -> bytes:
        if not self._multiprocess_dir:
            return "".join(_exposition(self.registry.collect())).encode("utf-8")
        if self._shared is not None:
            self._shared.publish()  # this worker's view is current; the others' a second old
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, self._multiprocess_dir)
        return "".join(_exposition(merged.collect())).encode("utf-8")

    def publish_live(self, stop: threading.Event) -> None:
        """With --num_workers: publishes this worker's live gauges until ``stop`` is set."""
        if self._shared is None:
            return
        shared = self._shared

        def loop() -> None:
            while not stop.wait(LIVE_PUBLISH_SECONDS):
                shared.publish()

        shared.publish()
        threading.Thread(target=loop, name="metrics-publisher", daemon=True).start()


def _fast_observe(child: Histogram) -> Callable[[float], None]:
    """``child.observe`` without its per-call checks: the bucket found by bisection, the
    sum and that bucket incremented, as prometheus-client's own ``observe`` does (0.26:
    the first bucket whose bound is at least the value). Falls back to ``observe`` if a
    later prometheus-client keeps its values otherwise."""
    try:
        total, buckets = child._sum.inc, [b.inc for b in child._buckets]
        bounds = list(child._upper_bounds)
    except AttributeError:
        return child.observe
    if len(buckets) != len(bounds) or bounds[-1] != float("inf"):
        return child.observe

    def observe(amount: float) -> None:
        total(amount)
        buckets[bisect_left(bounds, amount)](1)

    return observe


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


# The live gauges: name, help, labels, and how workers' values combine (multiprocess mode).
_AVAILABLE = (":onnx_serving:model_versions_available", "Versions of a model available.",
              ["model_name"], "livemin")
_PROVIDERS = (":onnx_serving:execution_provider",
              "Available versions of a model running on each ONNX Runtime execution provider.",
              ["model_name", "provider"], "livemax")
_IN_FLIGHT = (":onnx_serving:requests_in_flight",
              "Requests holding a version of the model now (decoding, queued or running).",
              ["model_name"], "livesum")
_QUEUED = (":onnx_serving:batch_queue_depth",
           "Requests waiting in the model's batch queues (--enable_batching).",
           ["model_name"], "livesum")


_Sample = tuple[str, tuple[str, ...], float]


def _live_values(counts: Iterable[VersionCounts]) -> Iterator[_Sample]:
    """(gauge, labels, value) for every live sample."""
    for c in counts:
        yield _AVAILABLE[0], (c.model_name,), c.available
        for provider, number in c.providers.items():
            yield _PROVIDERS[0], (c.model_name, provider), number
        yield _IN_FLIGHT[0], (c.model_name,), c.in_flight
        yield _QUEUED[0], (c.model_name,), c.batch_queue_depth


class _LiveCollector(Collector):
    """Read at scrape time from the manager, so it can never drift from it."""

    def __init__(self, versions: Callable[[], Iterable[VersionCounts]]) -> None:
        self._versions = versions

    def describe(self) -> list[Metric]:
        """Nothing to read at registration: the manager may not exist yet."""
        return []

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, doc, labels, _ in (_AVAILABLE, _PROVIDERS, _IN_FLIGHT, _QUEUED)
        }
        for name, labels, value in _live_values(self._versions()):
            families[name].add_metric(list(labels), value)
        yield from families.values()


class _SharedGauges:
    """The live gauges as multiprocess Gauges, copied from the manager on ``publish``."""

    def __init__(self, versions: Callable[[], Iterable[VersionCounts]]) -> None:
        self._versions = versions
        self._gauges = {
            name: Gauge(name, doc, labels, registry=None, multiprocess_mode=mode)  # type: ignore[arg-type]
            for name, doc, labels, mode in (_AVAILABLE, _PROVIDERS, _IN_FLIGHT, _QUEUED)
        }
        self._published: set[tuple[str, tuple[str, ...]]] = set()
        self._lock = threading.Lock()

    def publish(self) -> None:
        with self._lock:
            now = set()
            for name, labels, value in _live_values(self._versions()):
                self._gauges[name].labels(*labels).set(value)
                now.add((name, labels))
            for name, labels in self._published - now:  # a model gone: no longer counted
                self._gauges[name].labels(*labels).set(0)
            self._published = now


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
