"""Which calls a transport answers where they arrive: those of a model whose calls are
known to cost little, and no other."""

from __future__ import annotations

from onnx_serving.server.api.call_costs import CallCosts, sized


def test_a_model_is_cheap_only_once_its_calls_are_known_to_cost_little() -> None:
    costs = CallCosts(0.0005)
    assert not costs.cheap("m")  # nothing known yet: a worker answers
    costs.spent("m", 0.0002)
    assert costs.cheap("m")
    assert not costs.cheap("other")
    assert not costs.cheap(None)  # a call that names no model


def test_a_dear_call_hands_its_model_back_to_the_workers_at_once() -> None:
    costs = CallCosts(0.0005)
    for _ in range(100):
        costs.spent("m", 0.0002)
    costs.spent("m", 0.006)  # a version that now runs MobileNetV2
    assert not costs.cheap("m")
    for _ in range(100):
        costs.spent("m", 0.0001)
    assert costs.cheap("m")  # and cheap again once its calls are


def test_a_limit_of_zero_answers_every_call_on_a_worker() -> None:
    costs = CallCosts(0.0)
    costs.spent("m", 0.0)
    assert not costs.cheap("m")


def test_a_request_of_a_size_not_yet_known_goes_to_a_worker() -> None:
    """A model's small requests being cheap says nothing of a large one's cost."""
    costs = CallCosts(0.0005)
    assert sized("m", 42) == sized("m", 63) != sized("m", 64)
    for _ in range(100):
        costs.spent(sized("m", 42), 0.0001)
    assert costs.cheap(sized("m", 50))
    assert not costs.cheap(sized("m", 4_000_000))
    costs.spent(sized("m", 4_000_000), 0.02)
    assert not costs.cheap(sized("m", 4_000_000))
    assert costs.cheap(sized("m", 42))  # the small ones stay where they are
