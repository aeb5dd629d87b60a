"""Hot reload against the real server, with clients running throughout.

Version swaps, a rollback, a corrupt version and its fix, a version copied in
slowly, label moves by RPC and by config file, models added and removed by
config reload, refused reloads, and a base path that cannot be listed.
Background clients run on every model a reload touches or leaves out, and
must see zero failed requests, each answer coming from the version it names.
A slow model (a loop whose trip count the request gives) keeps requests in
flight while versions move.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import requests
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from onnx_serving.client import Client, ServingError
from tests.models import EXAMPLES, add_constant
from tests.server_process import ServerProcess, free_port

X = np.array([[10.0]], np.float32)
HALF_PLUS_TWO = EXAMPLES / "models/half_plus_two"


def publish(base: Path, version: int, model_bytes: bytes | None = None) -> None:
    """The documented safe way: write beside, then rename into place."""
    staging = base / f".staging-{version}"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(model_bytes or add_constant(version).SerializeToString())
    os.rename(staging, base / str(version))


def model_entry(name: str, base: Path, *, policy: str = "",
                labels: dict[str, int] | None = None) -> str:
    label_text = "".join(
        f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items()
    )
    return (f'config {{ name: "{name}" base_path: "{base}" model_platform: "onnx" '
            f'{policy}{label_text} }}')


def config_text(base: Path, *, policy: str = "", labels: dict[str, int] | None = None,
                extra: str = "") -> str:
    return f"model_config_list {{ {model_entry('live', base, policy=policy, labels=labels)} " \
           f"{extra} }}"


def specific(*versions: int) -> str:
    listed = " ".join(f"versions: {v}" for v in versions)
    return f"model_version_policy {{ specific {{ {listed} }} }}"


OTHER = model_entry("other", HALF_PLUS_TWO)


@dataclass(frozen=True, eq=False)
class Stream:
    """One kind of request the background clients send, and what each version answers."""

    model: str = "live"
    version: int | None = None
    label: str | None = None
    inputs: dict[str, np.ndarray] = field(default_factory=lambda: {"x": X})
    expect: Callable[[int], float] = lambda version: 10.0 + version  # live: y = x + version


OTHER_STREAM = Stream("other", inputs={"x": np.array([[2.0]], np.float32)},
                      expect=lambda version: 3.0)


class Traffic:
    """Clients sending each stream in a loop, two threads a stream. Every failure, wrong
    answer and unexpected exception is kept in ``errors``; so is the version that answered
    each request, per thread, in order."""

    def __init__(self, address: str, *streams: Stream, threads: int = 2) -> None:
        self.address = address
        self.streams = streams or (Stream(),)
        self.errors: list[str] = []
        self.seen: dict[Stream, list[list[int]]] = {s: [] for s in self.streams}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(stream,))
                         for stream in self.streams for _ in range(threads)]

    def _run(self, stream: Stream) -> None:
        versions: list[int] = []
        self.seen[stream].append(versions)
        try:
            with Client(self.address) as client:
                while not self._stop.is_set():
                    self._once(client, stream, versions)
        except Exception as exc:  # any error, not only ServingError: a dead client fails the test
            self.errors.append(f"{stream}: client thread died: {exc!r}")

    def _once(self, client: Client, stream: Stream, versions: list[int]) -> None:
        try:
            response = client.predict_response(stream.model, stream.inputs, timeout=30,
                                               version=stream.version, label=stream.label)
        except ServingError as exc:
            self.errors.append(f"{stream.model} {stream.version} {stream.label}: {exc}")
            return
        version = response.model_spec.version.value
        value = response.outputs["y"].float_val[0]
        if value != stream.expect(version):
            self.errors.append(f"{stream.model} version {version} answered {value}")
        versions.append(version)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def count(self, stream: Stream | None = None) -> int:
        """Requests answered for ``stream`` (the first by default)."""
        return sum(len(v) for v in self.seen[stream or self.streams[0]])

    def latest(self, stream: Stream | None = None) -> int:
        """The version that answered the newest request of ``stream``'s first thread."""
        threads = self.seen[stream or self.streams[0]]
        return threads[0][-1] if threads and threads[0] else -1

    def sequences(self, stream: Stream) -> list[list[int]]:
        """Each thread's answering versions, repeats collapsed: [2, 3] for 2, 2, 3, 3."""
        return [[v for i, v in enumerate(seen) if i == 0 or seen[i - 1] != v]
                for seen in self.seen[stream]]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``condition``; a version or model the server does not know yet counts as not met."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except ServingError:
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def start_server(tmp_path: Path, config: Path, *flags: str) -> ServerProcess:
    return ServerProcess(
        [
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=1",
            "--model_config_file_poll_wait_seconds=1",
            "--max_num_load_retries=2",
            "--load_retry_interval_micros=300000",
            *flags,
        ],
        tmp_path / "server.log",
    ).start()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, Path]]:
    base = tmp_path / "live"
    publish(base, 1)
    config = tmp_path / "models.config"
    config.write_text(config_text(base))
    server = start_server(tmp_path, config)
    yield server, base, config
    server.stop()


def reload(address: str, text: str) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    with grpc.insecure_channel(address) as channel:
        return model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=60
        )


def states(client: Client, model: str = "live") -> dict[int, str]:
    return {s.version: s.state for s in client.status(model)}


def test_versions_come_and_go_without_a_failed_request(live) -> None:
    server, base, _ = live
    with Traffic(server.address) as traffic, Client(server.address) as client:
        wait_for(lambda: traffic.latest() == 1)
        for version in (2, 3, 4):  # repeated swaps
            publish(base, version)
            wait_for(lambda v=version: traffic.latest() == v)
        shutil.rmtree(base / "4")  # rollback by deleting the newest
        wait_for(lambda: traffic.latest() == 3)
        wait_for(lambda: [s.state for s in client.status("live", version=4)] == ["END"])

        publish(base, 5, b"not a model")  # corrupt: retried, reported, never served
        wait_for(lambda: client.status("live", version=5)[0].state == "END")
        [status] = client.status("live", version=5)
        assert status.error_code == grpc.StatusCode.DATA_LOSS, status
        assert "cannot parse" in status.error_message
        time.sleep(1)
        assert traffic.latest() == 3

        fixed = base / "5" / "model.tmp"  # a fixed copy of the failed version is picked up
        fixed.write_bytes(add_constant(5).SerializeToString())
        os.replace(fixed, base / "5" / "model.onnx")
        wait_for(lambda: traffic.latest() == 5)

        slow = base / "6"  # copied in slowly, in place: waits, never fails
        slow.mkdir()
        data = add_constant(6).SerializeToString()
        with (slow / "model.onnx").open("wb") as out:
            for i in range(0, len(data), 40):
                out.write(data[i : i + 40])
                out.flush()
                time.sleep(0.3)
        wait_for(lambda: traffic.latest() == 6)
        assert all(s.error_message == "" for s in client.status("live", version=6))
        assert traffic.count() > 100
    assert traffic.errors == []
    assert "Failed to load servable version {name: live version: 6}" not in server.logs()
    assert "Batching is off" in server.logs() and "Monitoring is off" in server.logs()


def test_labels_and_config_reloads(live) -> None:
    server, base, config = live
    publish(base, 2)
    two_versions = specific(1, 2)
    # One reload adds version 2 and labels it: it replies once 2 is available.
    reload(server.address, config_text(base, policy=two_versions,
                                       labels={"stable": 1, "canary": 2}))
    assert "Model live now serves versions [1, 2] with labels {canary: 2, stable: 1}" \
        in server.logs()
    canary = Stream(label="canary")
    with Traffic(server.address, canary) as traffic, Client(server.address) as client:
        wait_for(lambda: traffic.latest() == 2)
        assert client.predict("live", {"x": X}, label="stable")["y"][0, 0] == 11.0

        # Flip by RPC: canary back to 1 (a rollback).
        reload(server.address, config_text(base, policy=two_versions,
                                           labels={"stable": 1, "canary": 1}))
        wait_for(lambda: traffic.latest() == 1)

        # A label to a version that is not available is refused, and changes nothing.
        with pytest.raises(grpc.RpcError) as info:
            reload(server.address, config_text(base, policy=two_versions,
                                               labels={"stable": 1, "canary": 7}))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == (
            "Request to assign label to version 7 of model live, which is not currently "
            "available for inference"
        )

        # Flip through the polled config file.
        config.write_text(config_text(base, policy=two_versions,
                                      labels={"stable": 1, "canary": 2}))
        wait_for(lambda: traffic.latest() == 2)

    # Add a model by reload: available when the reply comes.
    with_other = config_text(base, policy=two_versions, labels={"stable": 1, "canary": 2},
                             extra=OTHER)
    reload(server.address, with_other)
    with Traffic(server.address, canary, OTHER_STREAM) as traffic, \
            Client(server.address) as client:
        wait_for(lambda: traffic.count(canary) > 20 and traffic.count(OTHER_STREAM) > 20)
        # A model that cannot load, in a config that leaves "other" out: the reply says
        # which, and "other" serves throughout, as the refused config never applied.
        broken = base.parent / "broken"
        publish(broken, 1, b"garbage")
        bad = model_entry("bad", broken)
        with pytest.raises(grpc.RpcError) as info:
            reload(server.address, config_text(base, policy=two_versions,
                                               labels={"stable": 1, "canary": 2}, extra=bad))
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert info.value.details().startswith("1 model(s) did not become available: {{name: bad")
    assert traffic.errors == []
    assert "Unloaded servable version {name: other" not in server.logs()

    # Removed by reload: gone once the reply comes.
    reload(server.address, config_text(base, policy=two_versions,
                                       labels={"stable": 1, "canary": 2}))
    with Client(server.address) as client:
        wait_for(lambda: "other" not in _names(client))


def _names(client: Client) -> set[str]:
    names = set()
    for name in ("other", "live"):
        try:
            client.status(name)
            names.add(name)
        except ServingError:
            pass
    return names


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('model_config_list { config { name: "a" base_path: "relative/a" } }',
         "Expected model a to have an absolute path or URI; got base_path()=relative/a"),
        ('model_config_list { config { name: "a" base_path: "/a" } '
         'config { name: "a" base_path: "/b" } }',
         "Illegal to list model a multiple times in config list"),
        ('model_config_list { config { name: "a" base_path: "/a\\000b" } }',
         "Model a has a NUL character in its base_path"),
    ],
)
def test_reload_refuses_bad_configs(live, config: str, message: str) -> None:
    server, _, _ = live
    with pytest.raises(grpc.RpcError) as info:
        reload(server.address, config)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    with Client(server.address) as client:  # nothing changed
        assert client.predict("live", {"x": X})["y"][0, 0] == 11.0


def test_broken_or_empty_config_file_changes_nothing(live) -> None:
    """A file that does not parse is reported; an empty one (a writer that truncates before
    it rewrites) is TF Serving's "no action", not a config that serves nothing."""
    server, _, config = live
    with Traffic(server.address) as traffic:
        config.write_bytes(b"\xff\xfe not UTF-8")  # reported; the poller goes on
        wait_for(lambda: "Cannot re-read model config file" in server.logs())
        config.write_text("this is not a config")
        wait_for(lambda: "Error parsing text-format" in server.logs())
        config.write_text("")
        wait_for(lambda: "Taking no action for empty config" in server.logs())
        config.write_text("# only a comment\n")
        wait_for(lambda: server.logs().count("Taking no action for empty config") == 2)
        wait_for(lambda: traffic.count() > 20)
    assert traffic.errors == []
    assert "Unloaded servable version" not in server.logs()


def test_a_model_added_before_its_versions_serves_once_they_are_there(live) -> None:
    """The file names a model whose base path holds no version yet (the config first, then
    the copy): refused, said once, and tried at every poll until the version is there."""
    server, base, config = live
    later = base.parent / "later"
    later.mkdir()
    config.write_text(f"model_config_list {{ {model_entry('live', base)} "
                      f"{model_entry('later', later)} }}")
    refusal = "1 model(s) did not become available: {{name: later due to error: no version"
    with Traffic(server.address) as traffic, Client(server.address) as client:
        wait_for(lambda: refusal in server.logs())
        polls = server.logs().count("No versions of servable later found")
        wait_for(lambda: server.logs().count("No versions of servable later found") > polls + 2)
        assert server.logs().count(refusal) == 1
        publish(later, 1)
        wait_for(lambda: client.predict("later", {"x": X})["y"][0, 0] == 11.0)
    assert traffic.errors == []


def test_refused_reloads_change_nothing(live) -> None:
    """A reload is checked whole before anything changes, and one that fails while loading
    is rolled back: models, versions and labels serve as before, with no failed request."""
    server, base, config = live
    publish(base, 2)
    publish(base, 3)
    versions = "model_version_policy { all {} }"
    good = config_text(base, policy=versions, labels={"stable": 3, "canary": 2}, extra=OTHER)
    reload(server.address, good)
    x = np.array([[2.0]], np.float32)

    def serving_as_before(client: Client) -> None:
        assert client.predict("live", {"x": X}, label="stable")["y"][0, 0] == 13.0
        assert client.predict("live", {"x": X}, label="canary")["y"][0, 0] == 12.0
        assert client.predict("live", {"x": X}, version=1)["y"][0, 0] == 11.0
        assert client.predict("other", {"x": x})["y"][0, 0] == 3.0
        assert [s.state for s in client.status("live")] == ["AVAILABLE"] * 3

    streams = (Stream(label="stable"), Stream(label="canary"), Stream(version=1), Stream(),
               OTHER_STREAM)
    with Traffic(server.address, *streams, threads=1) as traffic, \
            Client(server.address) as client:
        serving_as_before(client)
        # A bad label, with other models removed and versions dropped: refused up front.
        with pytest.raises(grpc.RpcError) as info:
            reload(server.address, config_text(base, policy=specific(1),
                                               labels={"stable": 1, "canary": 7}))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "to version 7 of model live" in info.value.details()
        serving_as_before(client)

        # A new model that fails to load, with "other" removed and labels moved: rolled
        # back once it fails.
        broken = base.parent / "broken"
        publish(broken, 1, b"garbage")
        with pytest.raises(grpc.RpcError) as info:
            reload(server.address, config_text(base, policy=versions,
                                               labels={"stable": 3, "canary": 1},
                                               extra=model_entry("bad", broken)))
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        serving_as_before(client)
        with pytest.raises(ServingError):
            client.status("bad")

        # The polled config file: a label on a version that is not there changes nothing.
        config.write_text(config_text(base, policy=specific(1), labels={"stable": 5}))
        wait_for(lambda: "to version 5 of model live" in server.logs())
        serving_as_before(client)
        reload(server.address, good)  # and a good reload still applies
        assert all(traffic.count(s) > 10 for s in streams)
    assert traffic.errors == []
    assert "Unloaded servable version" not in server.logs()


def test_refused_reload_to_a_corrupt_base_path_keeps_serving(live) -> None:
    """Pointing a model at a base path whose only version is corrupt is refused, and the
    old version serves throughout: the same version number, or a new one. A good copy
    of the same version elsewhere is then loaded beside it and replaces it."""
    server, base, _ = live
    with Traffic(server.address, Stream(), Stream(version=1)) as traffic, \
            Client(server.address) as client:
        for number in (1, 2):
            corrupt = base.parent / f"corrupt-{number}"
            publish(corrupt, number, b"garbage")
            with pytest.raises(grpc.RpcError) as info:
                reload(server.address, config_text(corrupt))
            assert info.value.code() == grpc.StatusCode.UNKNOWN
            assert "1 model(s) did not become available: {{name: live" in info.value.details()
            assert client.predict("live", {"x": X})["y"][0, 0] == 11.0
            assert states(client)[1] == "AVAILABLE"
        time.sleep(1.5)  # a few polls of the old base path, now in force again
        assert states(client)[1] == "AVAILABLE"
        moved = base.parent / "moved"  # and a good copy elsewhere replaces it, same number
        publish(moved, 1)
        reload(server.address, config_text(moved))
        loading = f"Loading servable version {{name: live version: 1}} from {moved / '1'}"
        logs = server.logs()
        assert loading in logs, logs  # the reload answers once the moved copy is loaded
        wait_for(lambda: "Unloaded servable version {name: live version: 1}"
                 in server.logs().partition(loading)[2])
        assert states(client) == {1: "AVAILABLE"}
        count = traffic.count()
        wait_for(lambda: traffic.count() > count + 20)
    assert traffic.errors == []


def test_labels_beside_a_newer_version_that_never_loads(live) -> None:
    """A reload that only moves labels loads nothing, so a newer version directory still
    being copied does not refuse it. Once that version is there and fails to load, the
    old one serves only until a fixed copy loads: a label on it is refused, saying so
    (TF Serving takes it, and the label names a version gone once the fix loads); one on
    the failed version is refused as TF Serving refuses it."""
    server, base, _ = live
    with Traffic(server.address) as traffic, Client(server.address) as client:
        (base / "9").mkdir()  # a copy not started yet
        reload(server.address, config_text(base, labels={"stable": 1}))
        (base / "9" / "model.onnx").write_bytes(b"garbage")  # a copy that never loads
        wait_for(lambda: client.status("live", version=9)[0].error_message != "")
        for labels, words in (({"stable": 1, "also": 1}, "version 1 of model live, which "
                               "serves only until a version its policy wants loads"),
                              ({"stable": 9}, "version 9 of model live, which is not "
                               "currently available")):
            with pytest.raises(grpc.RpcError) as info:
                reload(server.address, config_text(base, labels=labels))
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert words in info.value.details()
        assert client.predict("live", {"x": X}, label="stable")["y"][0, 0] == 11.0
        count = traffic.count()
        wait_for(lambda: traffic.count() > count + 20)
    assert traffic.errors == []


@pytest.mark.parametrize("how", ["rpc", "file"])
def test_one_edit_canary_move(live, how: str) -> None:
    """{1, 2} canary 2 -> {1, 3} canary 3 and back: no request fails, and none is answered
    by an older version than before the move (the new version loads, the label moves, then
    the old version goes)."""
    server, base, config = live
    publish(base, 2)
    publish(base, 3)
    streams = (Stream(), Stream(label="canary"), Stream(label="stable"))
    with Client(server.address) as client:
        for old, new in ((2, 3), (3, 2)):
            before = config_text(base, policy=specific(1, old), labels={"stable": 1, "canary": old})
            reload(server.address, before)
            if how == "file" and config.read_text() != before:  # as served: a no-op reload
                polled = server.logs().count("changed; reloading")
                config.write_text(before)
                wait_for(lambda p=polled: server.logs().count("changed; reloading") > p)
            wait_for(lambda o=old: {v for v, s in states(client).items() if s == "AVAILABLE"}
                     == {o, 1})
            after = config_text(base, policy=specific(1, new), labels={"stable": 1, "canary": new})
            with Traffic(server.address, *streams) as traffic:
                wait_for(lambda: all(traffic.count(s) > 20 for s in streams))
                if how == "rpc":
                    reload(server.address, after)
                else:
                    config.write_text(after)
                wait_for(lambda o=old: states(client)[o] == "END")
                wait_for(lambda n=new: all(s[-1] == n for s in traffic.sequences(streams[1])))
            assert traffic.errors == []
            for stream, expected in zip(streams, ([max(1, old), max(1, new)], [old, new], [1]),
                                        strict=True):
                for sequence in traffic.sequences(stream):
                    assert sequence in (expected, expected[:1], expected[1:]), (stream, sequence)
            assert f"Model live now serves versions [1, {new}] with labels " \
                   f"{{canary: {new}, stable: 1}}" in server.logs()


def test_an_unlistable_base_path_keeps_what_serves(live) -> None:
    """A base path that cannot be listed (gone for a moment, here) unloads nothing: the
    versions keep serving, GetModelStatus and the log say what is wrong, and once the path
    is back it is as before."""
    server, base, _ = live
    away = base.with_name("live.away")
    with Traffic(server.address) as traffic, Client(server.address) as client:
        wait_for(lambda: traffic.count() > 10)
        os.rename(base, away)
        wait_for(lambda: "Cannot list base path" in client.status("live")[0].error_message)
        [status] = client.status("live")
        assert (status.version, status.state) == (1, "AVAILABLE")
        assert status.error_code == grpc.StatusCode.NOT_FOUND
        assert "keeping the versions loaded" in status.error_message
        count = traffic.count()
        wait_for(lambda: traffic.count() > count + 20)
        os.rename(away, base)
        wait_for(lambda: client.status("live")[0].error_message == "")
        assert states(client) == {1: "AVAILABLE"}
    assert traffic.errors == []
    assert "Cannot list base path" in server.logs()
    assert "Unloaded servable version" not in server.logs()


def slow_add(value: float) -> onnx.ModelProto:
    """y = x + value, after ``n`` rounds of a small matrix loop: a request that runs as long
    as it asks (a few microseconds a round), so requests can be in flight while versions
    move. Inputs x float32 [batch, 1] and n int64 [1]."""
    size = 64
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "w"], ["m"]),
         helper.make_node("Tanh", ["m"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "round",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, size])],
    )
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["n"], ["rounds"], keepdims=0),
         helper.make_node("Loop", ["rounds", "", "h0"], ["h"], body=body),
         helper.make_node("ReduceSum", ["h"], ["s"], keepdims=0),
         helper.make_node("Mul", ["s", "zero"], ["nothing"]),  # the loop feeds y, not pruned
         helper.make_node("Add", ["x", "c"], ["sum"]),
         helper.make_node("Add", ["sum", "nothing"], ["y"])],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.eye(size, dtype=np.float32) * 0.5, "w"),
         numpy_helper.from_array(np.ones((1, size), np.float32), "h0"),
         numpy_helper.from_array(np.array(0, np.float32), "zero"),
         numpy_helper.from_array(np.array(value, np.float32), "c")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def rounds(n: int) -> dict[str, np.ndarray]:
    return {"x": X, "n": np.array([n], np.int64)}


# How long a slow request runs: the in-flight checks below look once, well inside it.
SLOW_SECONDS = 6.0


@dataclass
class SlowServer:
    server: ServerProcess
    base: Path
    rest_port: int

    def in_flight(self) -> float:
        metrics = requests.get(
            f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics", timeout=10
        ).text
        prefix = ':onnx_serving:requests_in_flight{model_name="slow"} '
        return next((float(line.removeprefix(prefix)) for line in metrics.splitlines()
                     if line.startswith(prefix)), 0.0)

    def start_slow_request(self, pool: ThreadPoolExecutor, client: Client) -> Future[float]:
        """A request of about SLOW_SECONDS (sized on this machine), once the server holds it
        (the in-flight gauge says so)."""
        probe, started = 100_000, time.monotonic()
        client.predict("slow", rounds(probe), timeout=300)
        n = int(probe * SLOW_SECONDS / max(time.monotonic() - started, 1e-3))
        future = pool.submit(lambda: client.predict("slow", rounds(n), timeout=300)["y"][0, 0])
        wait_for(lambda: self.in_flight() == 1 or future.done())
        assert not future.done(), "the slow request ended before anything moved"
        return future


def slow_server(tmp_path: Path, *flags: str) -> SlowServer:
    base = tmp_path / "slow"
    publish(base, 1, slow_add(1).SerializeToString())
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ {model_entry('slow', base)} }}")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    server = start_server(tmp_path, config, f"--rest_api_port={rest_port}",
                          f"--monitoring_config_file={monitoring}", *flags)
    return SlowServer(server, base, rest_port)


def test_unloads_wait_for_requests_in_flight_and_an_empty_version_set_unloads(
    tmp_path: Path,
) -> None:
    """On the real server: an old version that a request still runs on is UNLOADING, not
    gone, until the request ends (the request is answered by it); new requests already go
    to the new version. With no version left on disk the model unloads, again only once its
    requests are done."""
    slow = slow_server(tmp_path, "--enable_batching")
    try:
        assert "Batching is on" in slow.server.logs()
        assert "Monitoring is on: Prometheus metrics at" in slow.server.logs()
        fast = rounds(0)
        with Client(slow.server.address) as client, ThreadPoolExecutor(1) as pool:
            request = slow.start_slow_request(pool, client)
            publish(slow.base, 2, slow_add(2).SerializeToString())
            wait_for(lambda: states(client, "slow").get(2) == "AVAILABLE")
            wait_for(lambda: states(client, "slow")[1] != "AVAILABLE")
            seen = states(client, "slow")
            assert not request.done()  # the observation above was made while it ran
            assert seen == {2: "AVAILABLE", 1: "UNLOADING"}
            assert client.predict("slow", fast)["y"][0, 0] == 12.0
            assert request.result() == 11.0
            wait_for(lambda: states(client, "slow") == {2: "AVAILABLE", 1: "END"})

            os.rename(slow.base / "1", slow.base / "retired-1")
            request = slow.start_slow_request(pool, client)
            os.rename(slow.base / "2", slow.base / "retired-2")  # no version left on disk
            wait_for(lambda: states(client, "slow")[2] != "AVAILABLE")
            seen = states(client, "slow")
            assert not request.done()
            assert seen == {2: "UNLOADING", 1: "END"}
            assert request.result() == 12.0
            wait_for(lambda: states(client, "slow") == {2: "END", 1: "END"})
            with pytest.raises(ServingError, match=r"Servable not found for request: "
                                                   r"Latest\(slow\)"):
                client.predict("slow", fast)
    finally:
        slow.server.stop()


def test_resource_preserving_unloads_before_it_loads(tmp_path: Path) -> None:
    """On the real server with --version_transition_policy=resource_preserving: the new
    version is not loaded while the old one still holds a request; it loads once the old
    one is gone."""
    slow = slow_server(tmp_path, "--version_transition_policy=resource_preserving")
    try:
        with Client(slow.server.address) as client, ThreadPoolExecutor(1) as pool:
            request = slow.start_slow_request(pool, client)
            publish(slow.base, 2, slow_add(2).SerializeToString())
            wait_for(lambda: states(client, "slow")[1] != "AVAILABLE")
            time.sleep(1.5)  # a poll or more: 2 is on disk and wanted, yet must wait
            seen = states(client, "slow")
            assert not request.done()
            assert seen == {1: "UNLOADING"}
            assert request.result() == 11.0
            wait_for(lambda: states(client, "slow") == {2: "AVAILABLE", 1: "END"})
            assert client.predict("slow", rounds(0))["y"][0, 0] == 12.0
    finally:
        slow.server.stop()
