"""Hot reload against the real server, with clients running throughout.

One server, one scenario: version swaps, a rollback, a corrupt version and
its fix, a version copied in slowly, label flips by RPC and by config file,
and models added and removed by config reload. Background clients must see
zero failed requests, each answer coming from the version it names.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from onnx_serving.client import Client, ServingError
from tests.models import EXAMPLES, add_constant
from tests.server_process import ServerProcess

X = np.array([[10.0]], np.float32)


def publish(base: Path, version: int, model_bytes: bytes | None = None) -> None:
    """The documented safe way: write beside, then rename into place."""
    staging = base / f".staging-{version}"
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(model_bytes or add_constant(version).SerializeToString())
    os.rename(staging, base / str(version))


def config_text(base: Path, *, policy: str = "", labels: dict[str, int] | None = None,
                extra: str = "") -> str:
    label_text = "".join(
        f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items()
    )
    return (
        f'model_config_list {{ config {{ name: "live" base_path: "{base}" '
        f'model_platform: "onnx" {policy}{label_text} }} {extra} }}'
    )


class Traffic:
    """Clients predicting on ``live`` in a loop; every failure and mismatch is kept."""

    def __init__(self, address: str, threads: int = 3, **spec: object) -> None:
        self.address, self.spec = address, spec
        self.errors: list[str] = []
        self.versions_seen: list[int] = []
        self.count = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with Client(self.address) as client:
            while not self._stop.is_set():
                try:
                    response = client.predict_response("live", {"x": X}, timeout=30,
                                                       **self.spec)  # type: ignore[arg-type]
                except ServingError as exc:
                    self.errors.append(str(exc))
                    continue
                version = response.model_spec.version.value
                value = response.outputs["y"].float_val[0]
                if value != 10.0 + version:
                    self.errors.append(f"version {version} answered {value}")
                self.versions_seen.append(version)
                self.count += 1

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def latest(self) -> int:
        return self.versions_seen[-1] if self.versions_seen else -1


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


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, Path]]:
    base = tmp_path / "live"
    publish(base, 1)
    config = tmp_path / "models.config"
    config.write_text(config_text(base))
    server = ServerProcess(
        [
            f"--model_config_file={config}",
            "--file_system_poll_wait_seconds=1",
            "--model_config_file_poll_wait_seconds=1",
            "--max_num_load_retries=2",
            "--load_retry_interval_micros=300000",
        ],
        tmp_path / "server.log",
    ).start()
    yield server, base, config
    server.stop()


def reload(address: str, text: str) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    with grpc.insecure_channel(address) as channel:
        return model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
            request, timeout=60
        )


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
        assert traffic.count > 100
    assert traffic.errors == []
    assert "Failed to load servable version {name: live version: 6}" not in server.logs()


def test_labels_and_config_reloads(live) -> None:
    server, base, config = live
    publish(base, 2)
    two_versions = "model_version_policy { specific { versions: 1 versions: 2 } }"
    # One reload adds version 2 and labels it: it replies once 2 is available.
    reload(server.address, config_text(base, policy=two_versions,
                                       labels={"stable": 1, "canary": 2}))
    with Traffic(server.address, threads=2, label="canary") as canary, \
            Client(server.address) as client:
        wait_for(lambda: canary.latest() == 2)
        assert client.predict("live", {"x": X}, label="stable")["y"][0, 0] == 11.0

        # Flip by RPC: canary back to 1 (a rollback).
        reload(server.address, config_text(base, policy=two_versions,
                                           labels={"stable": 1, "canary": 1}))
        wait_for(lambda: canary.latest() == 1)

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
        wait_for(lambda: canary.latest() == 2)

        # Add a model by reload: available when the reply comes; then remove it.
        other = f'config {{ name: "other" base_path: "{EXAMPLES / "models/half_plus_two"}" }}'
        reload(server.address, config_text(base, policy=two_versions,
                                           labels={"stable": 1, "canary": 2}, extra=other))
        x = np.array([[2.0]], np.float32)
        assert client.predict("other", {"x": x})["y"][0, 0] == 3.0
        reload(server.address, config_text(base, policy=two_versions,
                                           labels={"stable": 1, "canary": 2}))
        wait_for(lambda: "other" not in _names(client))

        # A model that cannot load: the reply says which, the rest keeps serving.
        broken = base.parent / "broken"
        publish(broken, 1, b"garbage")
        bad = f'config {{ name: "bad" base_path: "{broken}" }}'
        with pytest.raises(grpc.RpcError) as info:
            reload(server.address, config_text(base, policy=two_versions,
                                               labels={"stable": 1, "canary": 2}, extra=bad))
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert info.value.details().startswith("1 model(s) did not become available: {{name: bad")
        assert canary.count > 20
    assert canary.errors == []


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
    ],
)
def test_reload_refuses_bad_configs(live, config: str, message: str) -> None:
    server, _, _ = live
    with pytest.raises(grpc.RpcError) as info:
        reload(server.address, config)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    with Client(server.address) as client:  # nothing changed
        assert client.predict("live", {"x": X})["y"][0, 0] == 11.0


def test_broken_config_file_changes_nothing(live) -> None:
    server, _, config = live
    config.write_text("this is not a config")
    wait_for(lambda: "Error parsing text-format" in server.logs())
    with Client(server.address) as client:
        assert client.predict("live", {"x": X})["y"][0, 0] == 11.0


def test_refused_reloads_change_nothing(live) -> None:
    """A reload is checked whole before anything changes, and one that fails while loading
    is rolled back: models, versions and labels serve as before, with no failed request."""
    server, base, config = live
    publish(base, 2)
    publish(base, 3)
    versions = "model_version_policy { all {} }"
    other = f'config {{ name: "other" base_path: "{EXAMPLES / "models/half_plus_two"}" }}'
    good = config_text(base, policy=versions, labels={"stable": 3, "canary": 2}, extra=other)
    reload(server.address, good)
    x = np.array([[2.0]], np.float32)

    def serving_as_before(client: Client) -> None:
        assert client.predict("live", {"x": X}, label="stable")["y"][0, 0] == 13.0
        assert client.predict("live", {"x": X}, label="canary")["y"][0, 0] == 12.0
        assert client.predict("live", {"x": X}, version=1)["y"][0, 0] == 11.0
        assert client.predict("other", {"x": x})["y"][0, 0] == 3.0
        assert [s.state for s in client.status("live")] == ["AVAILABLE"] * 3

    with Traffic(server.address, threads=2, label="stable") as stable, \
            Client(server.address) as client:
        serving_as_before(client)
        # A bad label, with other models removed and versions dropped: refused up front.
        only_one = "model_version_policy { specific { versions: 1 } }"
        with pytest.raises(grpc.RpcError) as info:
            reload(server.address, config_text(base, policy=only_one,
                                               labels={"stable": 1, "canary": 7}))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "to version 7 of model live" in info.value.details()
        serving_as_before(client)

        # A new model that fails to load, with "other" removed: rolled back once it fails.
        broken = base.parent / "broken"
        publish(broken, 1, b"garbage")
        bad = f'config {{ name: "bad" base_path: "{broken}" }}'
        with pytest.raises(grpc.RpcError) as info:
            reload(server.address, config_text(base, policy=versions,
                                               labels={"stable": 3, "canary": 1}, extra=bad))
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        serving_as_before(client)
        with pytest.raises(ServingError):
            client.status("bad")

        # The polled config file: a label on a version that is not there changes nothing.
        config.write_text(config_text(base, policy=only_one, labels={"stable": 5}))
        wait_for(lambda: "to version 5 of model live" in server.logs())
        serving_as_before(client)
        reload(server.address, good)  # and a good reload still applies
        assert stable.count > 20
    assert stable.errors == []
