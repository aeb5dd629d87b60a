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
from onnx_serving.server.errors import Code, ServingError
from onnx_serving.server.repository.model_config import read_text_proto

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# TF Serving's request and runtime latency buckets: 10 µs * 1.8^i, 33 of them.
TF_LATENCY_BUCKETS = [10 * 1.8**i for i in range(33)]
# Loads take seconds to minutes: 1 ms * 2^i up to about 9 hours.
_LOAD_BUCKETS = [1e3 * 2**i for i in range(25)]
# TF Serving's batching_util.h (sizes) and batching_session.cc (queuing, to about 1 s).
_BATCH_BUCKETS = [2**i for i in range(14)]
_QUEUING_BUCKETS = [100 * 1.2**i for i in range(52)]

GRPC, REST = "GRPC", "REST"
# One request a version answered: its status and seconds.
VersionRecorder = Callable[[Code, float], None]
# A request's stages (decode, run, encode, ...) and each one's seconds.
StageObserver = Callable[[str, float], None]
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
            ["model_path", "status"], buckets=TF_LATENCY_BUCKETS, registry=r,
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
        # Labels and buckets as TF Serving's (batching_util.h, batching_session.cc).
        batching = ":tensorflow:serving:batching_session:"
        self._processed_batch = Histogram(
            batching + "processed_batch_size", "Tracks the batch size distribution on processing.",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self._input_batch = Histogram(
            batching + "input_batch_size", "Tracks the batch size distribution on the inputs.",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self._padding = Histogram(
            batching + "padding_size", "Tracks the padding size distribution on batches.",
            ["execution_batch_size"], buckets=_BATCH_BUCKETS, registry=r,
        )
        self._queuing = Histogram(
            batching + "queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ["thread_pool_name"], buckets=_QUEUING_BUCKETS, registry=r,
        )
        self._batches = Counter(
            batching + "wrapped_run_count", "Total count of run calls on the wrapped session",
            registry=r,
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
        # prometheus-client's labels() takes a lock and checks its labels on every call,
        # and each increment takes another: microseconds on each request's path. The
        # labelled children are kept here, and the request path's series count in the
        # tally, folded into prometheus-client's values when read.
        self._children: dict[tuple[object, ...], Any] = {}
        # With --num_workers another worker's scrape reads this one's files at any time:
        # nothing is held back there.
        self._tally = Tally(direct=bool(self._multiprocess_dir))
        self._requests_by: dict[tuple[str, str, str, Code], Callable[[float], None]] = {}
        self._stages: dict[tuple[str, str, str], StageObserver] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def request(self, model: str, api: str, entrypoint: str, code: Code, seconds: float) -> None:
        """One finished request. As in TF Serving, latency counts successes only."""
        key = (model, api, entrypoint, code)
        record = self._requests_by.get(key)
        if record is None:
            count = self._tally.counter(self._requests.labels(model, code.name))
            latency = self._tally.histogram(self._request_latency.labels(model, api, entrypoint))

            def record(seconds: float) -> None:
                count()
                if code is Code.OK:
                    latency(seconds * 1e6)

            record = self._requests_by.setdefault(key, record)
        record(seconds)

    def version(self, model: str, version: int) -> VersionRecorder:
        """What records the requests one version answers (status, seconds), made once per
        model version."""
        recorder = self._versions.get((model, version))
        if recorder is None:
            label = str(version)
            latency = self._tally.histogram(self._version_latency.labels(model, label))
            counts: dict[Code, Callable[[], None]] = {}
            requests, tally = self._version_requests, self._tally

            def record(code: Code, seconds: float) -> None:
                count = counts.get(code)
                if count is None:
                    count = counts.setdefault(code, tally.counter(
                        requests.labels(model, label, code.name)))
                count()
                if code is Code.OK:
                    latency(seconds * 1e6)

            recorder = self._versions.setdefault((model, version), record)
        return recorder

    def stages(self, model: str, entrypoint: str, api: str = "Predict") -> StageObserver:
        """What records a request's stages (name, seconds), made once per model,
        entrypoint and API: each stage's histogram, and the run's also as TF's
        runtime latency."""
        key = (model, entrypoint, api)
        observer = self._stages.get(key)
        if observer is None:
            observer = self._stages.setdefault(key, self._stage_observer(*key))
        return observer

    def _stage_observer(self, model: str, entrypoint: str, api: str) -> StageObserver:
        tally, stage_latency = self._tally, self._stage_latency
        by_stage: dict[str, tuple[Callable[[float], None], ...]] = {}
        runtime = tally.histogram(self._runtime_latency.labels(model, api, "ONNXRuntime"))

        def observe(stage: str, seconds: float) -> None:
            observers = by_stage.get(stage)
            if observers is None:
                own = tally.histogram(stage_latency.labels(model, entrypoint, stage))
                observers = by_stage.setdefault(
                    stage, (own, runtime) if stage == "run" else (own,))
            micros = seconds * 1e6
            for each in observers:
                each(micros)

        return observe

    def batch(
        self, model: str, pool: str, rows: int, padded_rows: int,
        tasks: list[tuple[int, float]],
    ) -> None:
        """One batch run: its size, padding, and each task's rows and wait (the "queue"
        stage)."""
        self._processed_batch.observe(padded_rows)
        self._child(self._padding, str(padded_rows)).observe(padded_rows - rows)
        self._batches.inc()
        self._child(self._batch_size, model).observe(rows)
        queuing = self._child(self._queuing, pool)
        queue_stage = self._child(self._stage_latency, model, "BATCH", "queue")
        for task_rows, seconds in tasks:
            self._input_batch.observe(task_rows)
            queuing.observe(seconds * 1e6)
            queue_stage.observe(seconds * 1e6)

    def request_log(self, model: str, written: bool) -> None:
        self._child(self._request_log, model, "written" if written else "dropped").inc()

    def warmup(self, model_path: str, error: ServingError | None, seconds: float) -> None:
        """A version's warmup, labelled as TF Serving's Status::ToString() words it: ``OK``,
        or the code and message."""
        status = "OK" if error is None else f"{error.code.name}: {error.message}"
        self._warmup_latency.labels(model_path, status).observe(seconds * 1e6)

    def load(self, model: str, ok: bool, seconds: float) -> None:
        self._load_latency.labels(model, "OK" if ok else "FAILED").observe(seconds * 1e6)

    def unload(self, model: str, seconds: float) -> None:
        self._unload_latency.labels(model).observe(seconds * 1e6)

    def render(self) -> bytes:
        self._tally.fold()
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


class Tally:
    """Running totals of the request path's counters and histograms, kept per thread
    without a lock and folded into prometheus-client's values when read.

    prometheus-client takes a lock for each increment: a request's eight series cost
    more than the rest of its accounting. Here each thread adds to its own lists, and
    ``fold`` (at each scrape) adds what each thread counted since the last fold to the
    labelled children, so the exposition and its names are prometheus-client's as
    before. A histogram's sum and buckets are added through prometheus-client's
    internals (0.26: ``_sum``, ``_buckets`` and ``_upper_bounds``); where a later
    version keeps them otherwise, each observation goes straight to ``observe``.

    ``direct``: every count goes to prometheus-client at once (--num_workers, where
    other processes read the values from files whenever they are scraped).
    """

    def __init__(self, *, direct: bool = False) -> None:
        self._direct = direct
        self._local = threading.local()
        self._shards: list[_Shard] = []
        self._lock = threading.Lock()

    def _shard(self) -> dict[_Series, list[float]]:
        shard = _Shard(threading.current_thread())
        with self._lock:
            self._shards.append(shard)
        self._local.values = shard.values
        return shard.values

    def counter(self, child: Any) -> Callable[[], None]:
        """Adds one to ``child`` (a labelled Counter)."""
        if self._direct:
            return child.inc  # type: ignore[no-any-return]
        series, counts = _Series(lambda delta: child.inc(delta[0]), 1), self._counts

        def inc() -> None:
            counts(series)[0] += 1

        return inc

    def histogram(self, child: Any) -> Callable[[float], None]:
        """Observes a value into ``child`` (a labelled Histogram): the first bucket whose
        bound is at least the value, as prometheus-client's ``observe``."""
        try:
            add_sum, add_bucket = child._sum.inc, [b.inc for b in child._buckets]
            bounds = list(child._upper_bounds)
        except AttributeError:
            return child.observe  # type: ignore[no-any-return]
        if len(add_bucket) != len(bounds) or bounds[-1] != float("inf"):
            return child.observe  # type: ignore[no-any-return]
        if self._direct:
            def observe_now(amount: float) -> None:
                add_sum(amount)
                add_bucket[bisect_left(bounds, amount)](1)

            return observe_now

        def fold(delta: list[float]) -> None:
            if delta[0]:
                add_sum(delta[0])
            for add, count in zip(add_bucket, delta[1:], strict=True):
                if count:
                    add(count)

        series, counts = _Series(fold, 1 + len(bounds)), self._counts

        def observe(amount: float) -> None:
            counted = counts(series)
            counted[0] += amount
            counted[1 + bisect_left(bounds, amount)] += 1

        return observe

    def _counts(self, series: _Series) -> list[float]:
        """This thread's counts of ``series``."""
        try:
            values = self._local.values
        except AttributeError:
            values = self._shard()
        counted = values.get(series)
        if counted is None:
            counted = values[series] = [0.0] * series.width
        return counted

    def fold(self) -> None:
        """Adds every thread's counts since the last fold to prometheus-client's values.
        A thread that has ended is folded a last time and forgotten."""
        with self._lock:
            kept = []
            for shard in self._shards:
                alive = shard.thread.is_alive()
                shard.fold()
                if alive:
                    kept.append(shard)
            self._shards = kept


class _Series:
    """One labelled series in the tally: how a delta of its counts reaches
    prometheus-client, and how many numbers it counts."""

    __slots__ = ("fold", "width")

    def __init__(self, fold: Callable[[list[float]], None], width: int) -> None:
        self.fold, self.width = fold, width


class _Shard:
    """One thread's counts (written by that thread only) and what has been folded."""

    __slots__ = ("folded", "thread", "values")

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.values: dict[_Series, list[float]] = {}
        self.folded: dict[_Series, list[float]] = {}

    def fold(self) -> None:
        # Copies, each taken whole under the GIL: the owner may count on meanwhile.
        for series, counted in list(self.values.items()):
            now = list(counted)
            before = self.folded.get(series)
            delta = now if before is None else [a - b for a, b in zip(now, before, strict=True)]
            if any(delta):
                series.fold(delta)
            self.folded[series] = now


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
