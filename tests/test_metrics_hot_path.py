"""The request path's shortcuts record exactly what prometheus-client's own calls would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from onnx_serving.server.metrics import _TF_BUCKETS, _fast_observe


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in registry.collect()
            for s in family.samples if not s.name.endswith("_created")]


def test_fast_observe_fills_the_same_buckets_as_observe() -> None:
    # Bounds themselves (a value on a bound belongs to it), between them, past the last.
    values = [0.0, 10.0, 10.000001, 18.0, 32.4, 33.0, *_TF_BUCKETS[5:9], 1e12, 5.5]
    plain, fast = CollectorRegistry(), CollectorRegistry()
    by_observe = Histogram("h", "h", ["m"], buckets=_TF_BUCKETS, registry=plain).labels("a")
    child = Histogram("h", "h", ["m"], buckets=_TF_BUCKETS, registry=fast).labels("a")
    by_fast = _fast_observe(child)
    assert by_fast != child.observe  # the shortcut, not the fallback
    for value in values:
        by_observe.observe(value)
        by_fast(value)
    assert _samples(fast) == _samples(plain)
