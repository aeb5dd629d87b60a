"""The manager's decisions: the transition table, then the manager with a fake loader
(orders, retries, labels, pinning, holds, staged base paths)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onnx_serving.server.errors import (
    BasePathUnavailable,
    FailedPrecondition,
    InvalidArgument,
    ModelLoadError,
    ServableNotFound,
    ServingError,
)
from onnx_serving.server.repository.applier import RefusedBeforeLoading
from onnx_serving.server.repository.config_poller import ConfigFilePoller
from onnx_serving.server.repository.manager import LoadOptions, ModelManager
from onnx_serving.server.repository.model_config import ModelConfig
from onnx_serving.server.repository.source import SettleFilter, VersionDir
from onnx_serving.server.repository.transitions import (
    Action,
    State,
    Transition,
    VersionView,
    next_actions,
)

NAME = "m"
BASE = Path("/base")


A, L, U, E = State.AVAILABLE, State.LOADING, State.UNLOADING, State.END
KEEP, SAVE = Transition.AVAILABILITY_PRESERVING, Transition.RESOURCE_PRESERVING


def view(version: int, state: State | None, aspired: bool, **flags: bool) -> VersionView:
    return VersionView(version, state, aspired, **flags)


@pytest.mark.parametrize(
    ("snapshot", "transition", "actions"),
    [
        # A new version loads beside the old one, which goes once the new one is available.
        ([view(1, A, False), view(2, None, True)], KEEP, [(Action.LOAD, 2)]),
        ([view(1, A, False), view(2, L, True, busy=True)], KEEP, []),
        ([view(1, A, False), view(2, A, True)], KEEP, [(Action.UNLOAD, 1)]),
        # A failed new version never takes the old one down.
        ([view(1, A, False), view(2, E, True, failed=True)], KEEP, []),
        # A reload holds what serves until its labels moved: {1,2} canary 2 -> {1,3}.
        ([view(1, A, True), view(2, A, False, held=True), view(3, None, True)], KEEP,
         [(Action.LOAD, 3)]),
        ([view(1, A, True), view(2, A, False, held=True), view(3, A, True)], KEEP, []),
        ([view(1, A, True), view(2, A, False), view(3, A, True)], KEEP, [(Action.UNLOAD, 2)]),
        # Resource preserving: unload first, load once the memory is free; holds do not count.
        ([view(1, A, False, held=True), view(2, None, True)], SAVE, [(Action.UNLOAD, 1)]),
        ([view(1, U, False, busy=True), view(2, None, True)], SAVE, []),
        ([view(1, E, False), view(2, None, True)], SAVE, [(Action.LOAD, 2)]),
        # Nothing wanted: everything goes, either way.
        ([view(1, A, False), view(2, A, False)], KEEP, [(Action.UNLOAD, 1), (Action.UNLOAD, 2)]),
        # Retries: due ones load again; one no longer wanted is abandoned.
        ([view(1, L, True, retry_due=True)], KEEP, [(Action.LOAD, 1)]),
        ([view(1, L, True)], KEEP, []),
        ([view(1, L, False), view(2, A, True)], KEEP, [(Action.ABANDON, 1)]),
        # Unloaded and wanted again (even while it was unloading): loads again; a failed
        # one does not (a fixed copy starts afresh, in the manager).
        ([view(1, A, True), view(2, E, True)], KEEP, [(Action.LOAD, 2)]),
        ([view(1, A, True), view(2, E, True, failed=True)], KEEP, []),
        # Highest first.
        ([view(1, None, True), view(3, None, True), view(2, None, True)], KEEP,
         [(Action.LOAD, 3), (Action.LOAD, 2), (Action.LOAD, 1)]),
    ],
)
def test_transition_table(snapshot, transition, actions) -> None:
    assert next_actions(snapshot, transition) == actions


class FakeLoader:
    """Loads ``path.name`` as the servable; versions in ``fail`` raise, in ``gate`` wait."""

    def __init__(self) -> None:
        self.fail: set[str] = set()
        self.gate: dict[str, threading.Event] = {}
        self.calls: list[str] = []
        self.live: set[str] = set()  # loaded and not yet garbage

    def __call__(self, _name: str, path: Path) -> Servable:
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


def versions(*numbers: int, tag: str = "", base: Path = BASE) -> dict[int, VersionDir]:
    return {v: VersionDir(v, base / str(v), ((tag, 0, 0),)) for v in numbers}


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
    manager.set_models([ModelConfig(NAME, BASE)])
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


def test_a_fixed_copy_does_not_wait_for_the_failed_versions_retry(loader) -> None:
    with make(loader, max_retries=3, retry_interval=60.0) as manager:
        loader.fail.add("1")
        manager.aspire(NAME, versions(1))
        wait_for(lambda: manager.statuses(NAME, 1)[0].error is not None)
        loader.fail.clear()
        manager.aspire(NAME, versions(1, tag="fixed"))  # a minute before its retry
        wait_for(lambda: states(manager) == {1: State.AVAILABLE})
        assert loader.calls == ["1", "1"]


def test_a_version_wanted_back_while_it_unloads_loads_again(manager, loader) -> None:
    manager.aspire(NAME, versions(1, 2))
    wait_for(lambda: states(manager) == {1: State.AVAILABLE, 2: State.AVAILABLE})
    with manager.acquire(NAME, version=2):  # keeps 2 UNLOADING
        manager.aspire(NAME, versions(1))
        wait_for(lambda: states(manager)[2] == State.UNLOADING)
        manager.aspire(NAME, versions(1, 2))
    assert manager.wait_settled([NAME], timeout=5) == {}
    assert states(manager) == {1: State.AVAILABLE, 2: State.AVAILABLE}


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
    assert settle.settled(NAME, BASE, one) == one  # a model's first scan is taken as it is
    growing = {**one, **versions(2, tag="part")}
    assert settle.settled(NAME, BASE, growing) == one
    assert settle.settled(NAME, BASE, {**one, **versions(2, tag="more")}) == one
    done = {**one, **versions(2, tag="more")}
    assert settle.settled(NAME, BASE, done) == done
    # A served version being touched keeps its last settled files.
    touched = {**versions(1, tag="touched"), **versions(2, tag="more")}
    assert settle.settled(NAME, BASE, touched) == done
    assert settle.settled(NAME, BASE, touched) == touched
    # Moved to another base path: its first scan is taken as it is; moved back, the
    # versions there are still known.
    other = versions(1, tag="b", base=Path("/other"))
    assert settle.settled(NAME, Path("/other"), other) == other
    assert settle.settled(NAME, BASE, touched) == touched


def test_a_reload_holds_what_serves_until_its_labels_moved(manager, loader) -> None:
    """{1, 2} canary 2 -> {1, 3} canary 3: 2 answers (and "latest" stays 2) until 3 is
    available and the label moved; only then does 2 go."""
    manager.aspire(NAME, versions(1, 2))
    wait_for(lambda: states(manager) == {1: State.AVAILABLE, 2: State.AVAILABLE})
    manager.set_labels(NAME, {"canary": 2}, False)
    loader.gate["3"] = threading.Event()
    with manager.holding([NAME]):
        manager.aspire(NAME, versions(1, 3))
        wait_for(lambda: states(manager).get(3) == State.LOADING)
        assert serving(manager) == "2"
        loader.gate["3"].set()
        wait_for(lambda: states(manager)[3] == State.AVAILABLE)
        assert states(manager)[2] == State.AVAILABLE  # held
        with manager.acquire(NAME, label="canary") as (version, _):
            assert version == 2
        assert manager.set_labels(NAME, {"canary": 3}, False) == []
    wait_for(lambda: states(manager)[2] == State.END)
    assert serving(manager) == "3"


def test_a_base_path_that_cannot_be_listed_changes_nothing(manager) -> None:
    manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    error = BasePathUnavailable(NAME, BASE, FileNotFoundError(2, "No such file or directory"))
    manager.cannot_list(NAME, error)
    [status] = manager.statuses(NAME)
    assert (status.state, status.error) == (State.AVAILABLE, error)
    assert serving(manager) == "1"
    manager.aspire(NAME, versions(1))
    assert manager.statuses(NAME)[0].error is None


def test_a_changed_base_path_is_staged_then_promoted_or_dropped(manager, loader) -> None:
    """The same version number from a new base path loads beside the one that serves."""
    manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    moved = Path("/moved")
    loader.fail.add("1")  # /moved/1 is corrupt
    manager.set_models([ModelConfig(NAME, moved)])
    manager.aspire(NAME, versions(1, base=moved))
    assert "cannot load 1" in manager.wait_settled([NAME], timeout=5)[NAME]
    assert serving(manager) == "1" and states(manager) == {1: State.AVAILABLE}
    manager.set_models([ModelConfig(NAME, BASE)])  # refused: dropped
    assert serving(manager) == "1"

    loader.fail.clear()
    manager.set_models([ModelConfig(NAME, moved)])
    manager.aspire(NAME, versions(1, base=moved))
    assert manager.wait_settled([NAME], timeout=5) == {}
    with manager.acquire(NAME) as (_, before):
        manager.promote(NAME, {"stable": 1})
        with manager.acquire(NAME, label="stable") as (_, after):
            assert after is not before  # new requests get the new copy at once
    wait_for(lambda: len(loader.live) == 1)


def test_a_model_removed_and_added_again_stays(manager, loader) -> None:
    manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    with manager.acquire(NAME):
        manager.set_models([])
        manager.set_models([ModelConfig(NAME, BASE)])  # while the old one still unloads
        manager.aspire(NAME, versions(1))
    wait_for(lambda: serving(manager) == "1")
    time.sleep(0.1)
    assert manager.model_names() == [NAME] and serving(manager) == "1"


def test_a_failed_version_no_longer_wanted_ends_with_a_log_line(loader, caplog) -> None:
    with make(loader, max_retries=3, retry_interval=60.0) as manager:
        loader.fail.add("1")
        manager.aspire(NAME, versions(1))
        manager.wait_settled([NAME], timeout=5)
        assert states(manager) == {1: State.LOADING}
        with caplog.at_level(logging.INFO):
            manager.aspire(NAME, {})  # deleted from disk while waiting to retry
        assert states(manager) == {1: State.END}
        assert "Version {name: m version: 1} failed to load and is no longer wanted" \
            in caplog.text


def test_config_file_poller_retries_and_applies_edits_made_during_start_up(
        tmp_path: Path) -> None:
    """The text in force is the one read with the first config, so an edit made while the
    first models load is applied at the first poll. A config refused before anything
    loaded is tried at every poll; one refused after loading at 1, 2, then 4 polls."""
    path = tmp_path / "models.config"
    entry = 'config {{ name: "{0}" base_path: "/models/{0}" model_platform: "onnx" }}'
    path.write_text(f"model_config_list {{ {entry.format('a')} }}")
    tried: list[list[str]] = []
    refusals: list[ServingError | None] = []

    def apply(configs: list[ModelConfig]) -> None:
        tried.append([c.name for c in configs])
        refusal = refusals.pop(0) if refusals else None
        if refusal is not None:
            raise refusal

    poller = ConfigFilePoller(path, 1.0, apply)
    path.write_text(f"model_config_list {{ {entry.format('a')} {entry.format('b')} }}")
    refusals += [RefusedBeforeLoading("no version found under /models/b")] * 2
    for _ in range(3):
        poller._poll()
    assert tried == [["a", "b"]] * 3  # refused twice, then in force
    poller._poll()
    assert len(tried) == 3  # the text in force is not applied again

    path.write_text(f"model_config_list {{ {entry.format('c')} }}")
    refusals += [ServingError("1 model(s) did not become available")] * 3
    polls_with_a_try = []
    for poll in range(1, 9):
        before = len(tried)
        poller._poll()
        if len(tried) > before:
            polls_with_a_try.append(poll)
    assert polls_with_a_try == [1, 2, 4, 8]  # then 1, 2 and 4 polls apart
