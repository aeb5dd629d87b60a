"""The manager's decisions with a fake loader: orders, retries, labels, pinning."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnx_serving.server.config import ModelConfig
from onnx_serving.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelLoadError,
    ServableNotFound,
)
from onnx_serving.server.repository.manager import (
    LoadOptions,
    ModelManager,
    State,
    Transition,
)
from onnx_serving.server.repository.source import SettleFilter, VersionDir

NAME = "m"


class FakeLoader:
    """Loads ``path.name`` as the servable; versions in ``fail`` raise, in ``gate`` wait."""

    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.gate: dict[str, threading.Event] = {}
        self.calls: list[str] = []
        self.live: set[str] = set()  # loaded and not yet garbage

    def __call__(self, path: Path) -> Servable:
        self.calls.append(path.name)
        if path.name in self.gate:
            self.gate[path.name].wait(10)
        if path.name in self.fail:
            raise ModelLoadError(f"cannot load {path.name}")
        return Servable(path.name, self.live)


class Servable:
    def __init__(self, name: str, live: set[str]) -> None:
        self.name, self._live = name, live
        live.add(name)

    def __del__(self) -> None:
        self._live.discard(self.name)


def versions(*numbers: int, tag: str = "") -> dict[int, VersionDir]:
    return {v: VersionDir(v, Path(str(v)), ((tag, 0, 0),)) for v in numbers}


def wait_for(condition, timeout: float = 5.0) -> None:
    """Polls ``condition``; a version not available yet counts as not met."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except ServableNotFound:
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def states(manager: ModelManager[Servable]) -> dict[int, State]:
    return {s.version: s.state for s in manager.statuses(NAME)}


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@contextlib.contextmanager
def make(loader: FakeLoader, **options: object) -> Iterator[ModelManager[Servable]]:
    manager: ModelManager[Servable] = ModelManager(
        loader, LoadOptions(**{"retry_interval": 0.05, **options})  # type: ignore[arg-type]
    )
    manager.set_models([ModelConfig(NAME, Path("/base"))])
    yield manager
    manager.close()


@pytest.fixture
def manager(loader: FakeLoader) -> Iterator[ModelManager[Servable]]:
    with make(loader) as made:
        yield made


def serving(manager: ModelManager[Servable]) -> str:
    with manager.acquire(NAME) as (_, servable):
        return servable.name


def test_new_version_loads_before_the_old_one_unloads(manager, loader) -> None:
    manager.aspire(NAME, versions(1))
    wait_for(lambda: states(manager) == {1: State.AVAILABLE})
    loader.gate["2"] = threading.Event()
    manager.aspire(NAME, versions(2))
    wait_for(lambda: states(manager).get(2) == State.LOADING)
    assert serving(manager) == "1"  # still served while 2 loads
    loader.gate["2"].set()
    wait_for(lambda: states(manager) == {2: State.AVAILABLE, 1: State.END})
    assert serving(manager) == "2"
    wait_for(lambda: loader.live == {"2"})  # version 1's memory is gone


def test_failed_new_version_never_takes_the_old_one_down(loader) -> None:
    with make(loader, max_retries=2) as manager:
        manager.aspire(NAME, versions(1))
        wait_for(lambda: serving(manager) == "1")
        loader.fail.add("2")
        manager.aspire(NAME, versions(2))
        wait_for(lambda: states(manager).get(2) == State.END)
        assert loader.calls.count("2") == 3  # one load and two retries
        [status] = manager.statuses(NAME, 2)
        assert status.error is not None and "cannot load 2" in status.error.message
        assert serving(manager) == "1"


def test_a_fixed_copy_of_a_failed_version_is_picked_up(loader) -> None:
    with make(loader, max_retries=0) as manager:
        loader.fail.add("1")
        manager.aspire(NAME, versions(1))
        wait_for(lambda: states(manager) == {1: State.END})
        loader.fail.clear()
        manager.aspire(NAME, versions(1))  # same files: not tried again
        time.sleep(0.1)
        assert loader.calls == ["1"]
        manager.aspire(NAME, versions(1, tag="fixed"))
        wait_for(lambda: states(manager) == {1: State.AVAILABLE})


def test_rollback_reloads_an_unloaded_version(manager, loader) -> None:
    manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    manager.aspire(NAME, versions(2))
    wait_for(lambda: states(manager) == {2: State.AVAILABLE, 1: State.END})
    manager.aspire(NAME, versions(1))  # version 2 deleted from disk
    wait_for(lambda: states(manager) == {2: State.END, 1: State.AVAILABLE})
    assert serving(manager) == "1"


def test_resource_preserving_unloads_first(loader) -> None:
    with make(loader, transition=Transition.RESOURCE_PRESERVING) as manager:
        manager.aspire(NAME, versions(1))
        wait_for(lambda: serving(manager) == "1")
        loader.gate["2"] = threading.Event()
        manager.aspire(NAME, versions(2))
        wait_for(lambda: states(manager).get(1) == State.END)
        wait_for(lambda: loader.live == set())  # nothing held while 2 loads
        loader.gate["2"].set()
        wait_for(lambda: serving(manager) == "2")


def test_unload_waits_for_requests_in_flight(manager, loader) -> None:
    manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    with manager.acquire(NAME) as (_, servable):
        manager.aspire(NAME, versions(2))
        wait_for(lambda: states(manager).get(1) == State.UNLOADING)
        time.sleep(0.1)
        assert states(manager)[1] == State.UNLOADING and servable.name == "1"
        assert serving(manager) == "2"  # new requests already go to 2
    wait_for(lambda: states(manager)[1] == State.END)


def test_empty_aspired_set_unloads_everything(manager) -> None:
    manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    manager.aspire(NAME, {})
    wait_for(lambda: states(manager) == {1: State.END})
    with pytest.raises(ServableNotFound, match=r"Latest\(m\)"):
        serving(manager)


def test_removed_model_goes_away(manager) -> None:
    manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    manager.set_models([])
    wait_for(lambda: manager.model_names() == [])
    with pytest.raises(ServableNotFound):
        serving(manager)


def test_labels_follow_tf_servings_rule(manager) -> None:
    manager.aspire(NAME, versions(1, 2))
    wait_for(lambda: states(manager) == {1: State.AVAILABLE, 2: State.AVAILABLE})
    assert manager.set_labels(NAME, {"stable": 1, "canary": 2}, False) == []
    with manager.acquire(NAME, label="canary") as (version, _):
        assert version == 2
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: beta"):
        manager.acquire(NAME, label="beta").__enter__()
    [error] = manager.set_labels(NAME, {"stable": 1, "canary": 3}, False)
    assert isinstance(error, FailedPrecondition)
    assert "version 3 of model m, which is not currently available" in error.message
    with manager.acquire(NAME, label="canary") as (version, _):
        assert version == 2  # unchanged: all or nothing
    # Allowed for a new label, never for moving an existing one.
    assert manager.set_labels(NAME, {"stable": 1, "canary": 2, "next": 3}, True) == []
    assert len(manager.set_labels(NAME, {"stable": 4, "canary": 2}, True)) == 1


def test_wait_settled_reports_what_did_not_load(loader) -> None:
    with make(loader, max_retries=3, retry_interval=60.0) as manager:
        loader.fail.add("1")
        manager.aspire(NAME, versions(1))
        failed = manager.wait_settled([NAME], timeout=5)
        assert "cannot load 1" in failed[NAME]  # after the first attempt, retries pending
        assert states(manager) == {1: State.LOADING}


def test_settle_filter_waits_for_files_to_stop_changing() -> None:
    settle = SettleFilter()
    one = versions(1, tag="a")
    assert settle.settled(NAME, one) == one  # a model's first scan is taken as it is
    growing = {**one, **versions(2, tag="part")}
    assert settle.settled(NAME, growing) == one
    assert settle.settled(NAME, {**one, **versions(2, tag="more")}) == one
    done = {**one, **versions(2, tag="more")}
    assert settle.settled(NAME, done) == done
    # A served version being touched keeps its last settled files.
    touched = {**versions(1, tag="touched"), **versions(2, tag="more")}
    assert settle.settled(NAME, touched) == done
    assert settle.settled(NAME, touched) == touched
