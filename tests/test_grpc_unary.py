"""Unary calls answered from gRPC's core give a client what grpc.Server itself gives it.

Each case runs once on a plain grpc.Server and once on the same kind of server with the
unary lane in front (server/api/grpc/unary.py), called by a real channel on loopback;
the answers, codes, details and trailing metadata must match.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from onnx_serving.server.api.grpc.unary import UnaryServer, lane_available

SERVICE = "test.Lane"
Behavior = Callable[[bytes, grpc.ServicerContext], bytes]


class Served:
    """A server on a loopback port with ``methods`` (raw bytes in and out)."""

    def __init__(self, methods: dict[str, Behavior], *, lane: bool, deserialize: Any = None,
                 serialize: Any = None, inline: frozenset[str] = frozenset()) -> None:
        paths = {f"/{SERVICE}/{name}" for name in inline}
        plain = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server: grpc.Server = UnaryServer(
            plain, workers=4, observe=lambda _path, handler: handler,
            inline=lambda path: (lambda request: "model") if path in paths else None,
            inline_cpu=0.001,
        ) if lane else plain
        handlers = {name: grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=deserialize, response_serializer=serialize)
            for name, behavior in methods.items()}
        handlers["Stream"] = grpc.unary_stream_rpc_method_handler(
            lambda request, context: iter([request, request]))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE, handlers),))
        self.server.add_registered_method_handlers(SERVICE, handlers)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def call(self, name: str, request: bytes = b"x", **kwargs: Any) -> Any:
        return self.channel.unary_unary(f"/{SERVICE}/{name}")(request, **kwargs)

    def outcome(self, name: str, request: bytes = b"x") -> tuple[Any, ...]:
        try:
            answer, call = self.channel.unary_unary(f"/{SERVICE}/{name}").with_call(request)
            return ("ok", answer, call.code(), tuple(call.trailing_metadata() or ()))
        except grpc.RpcError as exc:
            return ("error", exc.code(), exc.details(), tuple(exc.trailing_metadata() or ()))

    def close(self) -> None:
        self.channel.close()
        self.server.stop(grace=None).wait(10)


def _abort(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("why", "a test"),))
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: é")
    raise AssertionError("abort returns nothing")


def _abort_ok(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.OK, "fine?")
    raise AssertionError("abort returns nothing")


def _raise(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise ValueError("the handler broke")


def _set_code(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
    context.set_details("set, not aborted")
    return b"answer anyway"


def _set_code_then_raise(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
    raise ValueError("after setting a code")


def _echo_metadata(request: bytes, context: grpc.ServicerContext) -> bytes:
    sent = dict(context.invocation_metadata())
    context.set_trailing_metadata((("seen", sent.get("asked", "")),))
    return request + b"|" + context.peer().split(":")[0].encode()


def _not_bytes(request: bytes, context: grpc.ServicerContext) -> Any:
    return 12345  # no serializer: gRPC cannot send it


CASES: dict[str, Behavior] = {
    "Echo": lambda request, context: request,
    "Abort": _abort,
    "AbortOk": _abort_ok,
    "Raise": _raise,
    "SetCode": _set_code,
    "SetCodeThenRaise": _set_code_then_raise,
    "Metadata": _echo_metadata,
}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Served, Served]]:
    plain, lane = Served(CASES, lane=False), Served(CASES, lane=True)
    yield plain, lane
    plain.close()
    lane.close()


def test_this_grpcio_has_what_the_lane_needs() -> None:
    assert lane_available(grpc.server(futures.ThreadPoolExecutor(max_workers=1)))


@pytest.mark.parametrize("name", [*CASES, "Missing"])
def test_each_outcome_is_grpc_servers_own(pair: tuple[Served, Served], name: str) -> None:
    plain, lane = pair
    assert lane.outcome(name) == plain.outcome(name)


def test_metadata_and_peer_reach_the_handler(pair: tuple[Served, Served]) -> None:
    for served in pair:
        answer, call = served.channel.unary_unary(f"/{SERVICE}/Metadata").with_call(
            b"hi", metadata=(("asked", "yes"),))
        assert answer in (b"hi|ipv4", b"hi|ipv6")
        assert ("seen", "yes") in tuple(call.trailing_metadata())


def test_streaming_methods_stay_with_grpc_server(pair: tuple[Served, Served]) -> None:
    for served in pair:
        stream = served.channel.unary_stream(f"/{SERVICE}/Stream")(b"s")
        assert list(stream) == [b"s", b"s"]


def test_an_answer_that_is_not_bytes_is_internal() -> None:
    """grpc.Server never answers such a call; the lane says why."""
    served = Served({"NotBytes": _not_bytes}, lane=True)
    try:
        assert served.outcome("NotBytes") == (
            "error", grpc.StatusCode.INTERNAL, "Failed to serialize response!", ())
    finally:
        served.close()


def test_a_request_that_does_not_parse_is_internal() -> None:
    def parse(raw: bytes) -> bytes:
        raise ValueError("not a message")

    outcomes = []
    for lane in (False, True):
        served = Served({"Echo": lambda request, context: request}, lane=lane, deserialize=parse)
        outcomes.append(served.outcome("Echo"))
        served.close()
    assert outcomes[0] == outcomes[1] == (
        "error", grpc.StatusCode.INTERNAL, "Exception deserializing request!", ())


def test_callbacks_run_when_answered_and_when_cancelled() -> None:
    """A handler's termination callbacks run once its call ends either way: the serving
    core relies on them to stop the run of a caller that has gone."""
    release, called = threading.Event(), threading.Event()
    ended: list[str] = []

    def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.add_callback(lambda: ended.append(request.decode()))
        called.set()
        release.wait(10)
        return request

    served = Served({"Wait": wait}, lane=True)
    try:
        future = served.channel.unary_unary(f"/{SERVICE}/Wait").future(b"cancelled")
        assert called.wait(10)
        future.cancel()
        deadline = time.monotonic() + 10
        while "cancelled" not in ended and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ended == ["cancelled"]
        release.set()
        assert served.call("Wait", b"answered") == b"answered"
        deadline = time.monotonic() + 10
        while len(ended) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ended == ["cancelled", "answered"]
    finally:
        release.set()
        served.close()


def test_the_deadline_reaches_the_handler() -> None:
    def remaining(request: bytes, context: grpc.ServicerContext) -> bytes:
        return f"{context.time_remaining():.3f}".encode()

    served = Served({"Remaining": remaining}, lane=True)
    try:
        assert 1.0 < float(served.call("Remaining", timeout=3)) < 3.1  # as the core rounds it
        assert float(served.call("Remaining")) > 1e6  # no deadline
    finally:
        served.close()


def test_stop_lets_a_call_in_flight_finish_within_grace() -> None:
    started = threading.Event()

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        started.set()
        time.sleep(0.5)
        return b"done"

    served = Served({"Slow": slow}, lane=True)
    future = served.channel.unary_unary(f"/{SERVICE}/Slow").future(b"x")
    assert started.wait(10)
    stopped = served.server.stop(grace=5)
    assert future.result(timeout=10) == b"done"
    assert stopped.wait(10)
    served.channel.close()


def test_quick_methods_run_on_the_poller_and_slow_ones_on_workers() -> None:
    """A method allowed to run inline does once its calls are known to be short; one whose
    calls take long goes to the workers however it is allowed, and so does a request of
    a size its method's calls have not had."""
    def where(request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"slow":
            busy = time.thread_time() + 0.005
            while time.thread_time() < busy:
                pass
        return threading.current_thread().name.encode()

    served = Served({"Quick": where, "Slow": where, "Held": where}, lane=True,
                    inline=frozenset({"Quick", "Slow"}))
    try:
        quick = {served.call("Quick") for _ in range(20)}
        slow = {served.call("Slow", b"slow") for _ in range(20)}
        held = {served.call("Held") for _ in range(20)}
        large = served.call("Quick", b"x" * 100_000)  # a size its calls have not had
    finally:
        served.close()
    assert b"grpc-unary-poller" in quick
    assert all(name.startswith(b"grpc-unary-") for name in quick | slow | held | {large})
    assert b"grpc-unary-poller" not in slow | held | {large}


def test_workers_start_as_calls_need_them_up_to_the_most() -> None:
    """No worker before a call; calls one after another take one; calls at once take one
    each, at most the lane's ``workers``, and the calls beyond them wait their turn."""
    def lane_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("grpc-unary-")}

    before = lane_threads()
    gate = threading.Barrier(4 + 1)

    def held(request: bytes, context: grpc.ServicerContext) -> bytes:
        if request == b"wait":
            gate.wait(10)
        return threading.current_thread().name.encode()

    served = Served({"Held": held}, lane=True)  # four workers at most
    try:
        assert {t.name for t in lane_threads() - before} == {"grpc-unary-poller"}
        assert {served.call("Held") for _ in range(10)} == {b"grpc-unary-0"}
        with futures.ThreadPoolExecutor(max_workers=6) as callers:
            waiting = [callers.submit(served.call, "Held", b"wait") for _ in range(4)]
            later = [callers.submit(served.call, "Held") for _ in range(2)]
            gate.wait(10)  # all four workers hold a call at once
            names = {f.result(timeout=10) for f in waiting + later}
        workers = {t.name for t in lane_threads() - before} - {"grpc-unary-poller"}
    finally:
        served.close()
    assert workers == {f"grpc-unary-{i}" for i in range(4)}
    assert names <= {w.encode() for w in workers}
    assert not lane_threads() - before  # stopped, the lane's threads have all ended


def test_a_worker_that_cannot_start_leaves_no_call_unanswered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Out of threads, with no worker running, the poller answers the call itself."""
    start = threading.Thread.start

    def refuse_workers(thread: threading.Thread) -> None:
        if thread.name.removeprefix("grpc-unary-").isdigit():  # a lane worker
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_workers)
    served = Served({"Held": lambda request, context: threading.current_thread().name.encode()},
                    lane=True)
    try:
        answers = {served.call("Held", timeout=10) for _ in range(3)}
    finally:
        served.close()
    assert answers == {b"grpc-unary-poller"}
    assert "could not start a worker (can't start new thread); 0 run" in caplog.text


def test_a_server_that_never_started_stops() -> None:
    """The app stops what it built even where a port could not be had."""
    server = UnaryServer(grpc.server(futures.ThreadPoolExecutor(max_workers=1)), workers=2,
                         observe=lambda _path, handler: handler)
    assert server.stop(grace=None).wait(10)
