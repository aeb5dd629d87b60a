"""Which versions are loaded, and which one answers a request.

The manager owns the state of every model version, and nothing about how a
version is loaded (that is the injected ``loader``) or where versions come
from (a source calls ``aspire`` with the complete list it wants served, as
TF Serving's sources do; omission means "unload").

Loads and unloads run on worker threads, never on a request's; which are
due is decided by ``transitions.next_actions`` (the transition policy) over a
snapshot of a model's versions. A reload may hold the versions that serve now
(``holding``) so that they go only once it has moved its labels.

A model whose base path a reload changes is staged: a second model of the
same name, loaded from the new path while the old one answers every request,
and swapped in by ``promote`` (or dropped when the reload is refused). Version
numbers may repeat between the two paths.

Requests hold a version through ``acquire``; an unload waits until the
requests in flight on that version have finished, then drops it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from onnx_serving.server.errors import (
    FailedPrecondition,
    ModelLoadError,
    NotFound,
    ServingError,
)
from onnx_serving.server.repository.labels import LabelError, refused_labels
from onnx_serving.server.repository.memory import release_unloaded
from onnx_serving.server.repository.model_config import ModelConfig
from onnx_serving.server.repository.pinning import pin
from onnx_serving.server.repository.retries import RetryTicker
from onnx_serving.server.repository.source import VersionDir
from onnx_serving.server.repository.transitions import (
    Action,
    State,
    Transition,
    VersionView,
    next_actions,
)
from onnx_serving.server.repository.versions import ModelEntry, VersionEntry, VersionStatus

log = logging.getLogger(__name__)

S = TypeVar("S")


@dataclass(frozen=True)
class LoadOptions:
    """Retry policy and worker counts, TF Serving's defaults."""

    max_retries: int = 5
    retry_interval: float = 60.0
    load_threads: int = 1
    unload_threads: int = 1
    transition: Transition = Transition.AVAILABILITY_PRESERVING


class LifecycleObserver(Protocol):
    """Told of every load and unload (the metrics are one)."""

    def load(self, model: str, ok: bool, seconds: float) -> None: ...

    def unload(self, model: str, seconds: float) -> None: ...


class ModelManager(Generic[S]):
    def __init__(
        self,
        loader: Callable[[str, Path], S],
        options: LoadOptions | None = None,
        *,
        observer: LifecycleObserver | None = None,
        describe: Callable[[S], str] = lambda servable: "",
        close: Callable[[S], None] = lambda servable: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``loader`` loads one version, given its model's name and folder (TF Serving's
        Loader: server/loading.py's ModelLoader); ``describe`` adds to the log line of a
        load (the providers in use, say); ``close`` runs on an unload once its requests are
        done, before the servable goes."""
        self._loader = loader
        self._options = options or LoadOptions()
        self._observer = observer
        self._describe = describe
        self._close = close
        self._clock = clock
        lock = threading.RLock()
        self._lock = threading.Condition(lock)
        # Told when a version's last request ends, on its own: a request's release must
        # not wake everything that waits on the lock (the retry ticker, start-up waits).
        self._drained = threading.Condition(lock)
        self._models: dict[str, ModelEntry[S]] = {}
        self._staged: dict[str, ModelEntry[S]] = {}  # loading from a changed base path
        self._loads = ThreadPoolExecutor(max(1, self._options.load_threads), "load")
        self._unloads = ThreadPoolExecutor(max(1, self._options.unload_threads), "unload")
        self._closed = False
        RetryTicker(self._lock, self._start_due_retries, lambda: self._closed).start()

    # -- what should be served ---------------------------------------------------

    def set_models(self, configs: Iterable[ModelConfig]) -> None:
        """Replaces the model set: new models start empty, absent ones are unloaded, and
        one whose base path changed is staged beside the one that serves (``promote``)."""
        configs = list(configs)
        with self._lock:
            wanted = {c.name: c for c in configs}
            for name, staged in list(self._staged.items()):
                config = wanted.get(name)
                if config is None or config.base_path != staged.config.base_path \
                        or config.base_path == self._models[name].config.base_path:
                    self._retire(self._staged.pop(name))
            for name, model in self._models.items():
                if name not in wanted:
                    model.removed = True
                    model.aspired = {}
            for config in configs:
                # Labels change only through set_labels, once versions have loaded.
                current = self._models.get(config.name)
                if current is None or current.removed:
                    self._models[config.name] = ModelEntry(replace(config, labels={}))
                elif current.config.base_path != config.base_path:
                    staged = self._staged.setdefault(config.name, ModelEntry(config))
                    staged.config = replace(config, labels={})
                else:
                    current.config = replace(config, labels=current.config.labels)
            self._reconcile_all()

    def promote(self, name: str, labels: Mapping[str, int]) -> None:
        """A staged model (loaded from its new base path), with the labels given, replaces
        the one that served: requests go to it from now, and the old one's versions unload
        once done. Labels are not checked: ``label_errors`` was asked first."""
        with self._lock:
            staged = self._staged.pop(name, None)
            if staged is not None:
                staged.config = replace(staged.config, labels=labels)
                self._retire(self._models[name])
                self._models[name] = staged

    def _retire(self, model: ModelEntry[S]) -> None:
        model.removed, model.aspired, model.held = True, {}, frozenset()
        self._reconcile(model)

    @contextlib.contextmanager
    def holding(self, names: Iterable[str]) -> Iterator[None]:
        """Keeps the versions of these models available now from unloading until the block
        ends (availability preserving only): a reload's new versions load beside them, and
        its labels move, before they go. Requests naming no version never see an older
        version on the way, nor a label a version that is gone."""
        names = list(names)
        with self._lock:
            for name in names:
                if (model := self._models.get(name)) is not None:
                    model.held = frozenset(model.available())
        try:
            yield
        finally:
            with self._lock:
                for name in names:
                    if (model := self._models.get(name)) is not None:
                        model.held = frozenset()
                        self._reconcile(model)

    def _target(self, name: str) -> ModelEntry[S] | None:
        """The model a source and a reload work on: the staged one, if any."""
        model = self._staged.get(name) or self._models.get(name)
        return model if model is not None and not model.removed else None

    def cannot_list(self, name: str, error: ServingError) -> None:
        """The source could not list the model's base path: nothing changes (a base path
        that is gone for a moment must not unload what serves, as TF Serving's
        file_system_storage_path_source.cc ensures), and GetModelStatus says why."""
        with self._lock:
            model = self._target(name)
            if model is None:
                return
            if model.source_error is None or model.source_error.message != error.message:
                log.error("%s", error.message)
            model.source_error = error

    def aspire(self, name: str, versions: Mapping[int, VersionDir]) -> None:
        """The complete set of versions the source wants served for one model."""
        with self._lock:
            model = self._target(name)
            if model is None:
                return
            if model.source_error is not None:
                log.info("Base path %s of model %s can be listed again",
                         model.config.base_path, name)
                model.source_error = None
            for version, found in versions.items():
                known = model.versions.get(version)
                # A failed version whose files changed (a fixed copy) starts afresh, also
                # while a retry of the old files waits.
                if known is not None and known.state is not State.AVAILABLE \
                        and not known.busy and known.error is not None \
                        and known.fingerprint != found.fingerprint:
                    del model.versions[version]
            model.aspired = dict(versions)
            self._reconcile(model)

    def set_labels(
        self,
        name: str,
        labels: Mapping[str, int],
        allow_unavailable: bool,
        *,
        skip_invalid: bool = False,
    ) -> list[FailedPrecondition]:
        """Replaces a model's labels by TF Serving's rule: a label must name an available
        version, unless ``allow_unavailable`` and the label is new (or unmoved).

        Any invalid label leaves the labels as they were, unless ``skip_invalid``, which
        assigns the valid ones; the invalid ones are returned either way.
        """
        with self._lock:
            model = self._models.get(name)
            if model is None or model.removed:
                raise NotFound(f"Could not find any versions of model {name}")
            invalid = self.label_errors(name, labels, allow_unavailable)
            if skip_invalid or not invalid:
                bad = {e.label for e in invalid}
                valid = {k: v for k, v in labels.items() if k not in bad}
                model.config = replace(model.config, labels=valid)
            return [e.error for e in invalid]

    def label_errors(
        self, name: str, labels: Mapping[str, int], allow_unavailable: bool,
        coming: Iterable[int] | None = None,
    ) -> list[LabelError]:
        """The labels TF Serving's rule refuses, changing nothing. A label must name a
        version the model serves and means to keep (available and aspired), or one in
        ``coming`` when given (a reload checks labels before loading what it adds)."""
        with self._lock:
            model = self._models.get(name)
            live = model is not None and not model.removed
            target = self._target(name)
            serving = target.serving() if target is not None else []
            return refused_labels(
                name, labels, allow_unavailable=allow_unavailable,
                current=model.config.labels if model is not None and live else {},
                available=coming if coming is not None else serving,
                replaced=set(target.available()) - set(serving) if target is not None else (),
            )

    # -- how it is served -----------------------------------------------------

    def acquire(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> AbstractContextManager[tuple[int, S]]:
        """Pins the answering version for one request: by label, number, or the highest."""
        return _Pinned(self, name, version, label)

    def _release(self, held: VersionEntry[S]) -> None:
        with self._lock:
            held.in_flight -= 1
            if held.in_flight == 0:
                self._drained.notify_all()

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version seen, highest first, as GetModelStatus reports them."""
        with self._lock:
            model = self._models.get(name)
            statuses = {v: e.status() for v, e in model.versions.items()} if model else {}
            if model is not None and (problem := model.source_error) is not None:
                statuses = {v: replace(status, error=status.error or problem)
                            for v, status in statuses.items()}
        if version is not None:
            if version not in statuses:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise NotFound(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def labels(self, name: str) -> dict[str, int]:
        with self._lock:
            model = self._models.get(name)
            return dict(model.config.labels) if model is not None and not model.removed else {}

    def serving_versions(self, name: str) -> list[int]:
        """The versions a model serves and is meant to, lowest first (for the log)."""
        with self._lock:
            model = self._models.get(name)
            return model.serving() if model is not None and not model.removed else []

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(n for n, m in self._models.items() if not m.removed)

    def available(self) -> dict[str, list[S]]:
        """A snapshot of what serves now, by model (for metrics)."""
        with self._lock:
            return {
                name: [entry.servable for entry in m.versions.values()
                       if entry.state is State.AVAILABLE and entry.servable is not None]
                for name, m in self._models.items() if not m.removed
            }

    def in_flight(self) -> dict[str, int]:
        """Requests holding a version now, by model: how busy each model is (autoscaling)."""
        with self._lock:
            return {
                name: sum(entry.in_flight for entry in m.versions.values())
                for name, m in self._models.items() if not m.removed
            }

    def unavailable_models(self) -> list[str]:
        """Models with no available version: none, when a readiness probe may pass."""
        with self._lock:
            return sorted(n for n, m in self._models.items() if not m.removed and not m.available())

    def wait_settled(self, names: Iterable[str], timeout: float | None = None) -> dict[str, str]:
        """Waits until every aspired version of these models has loaded or failed its first
        attempt (retries go on in the background).

        Returns the models with no available version, each with its reason.
        """
        names = list(names)
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            while not all(self._settled(n) for n in names):
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    break
                self._lock.wait(remaining if remaining is not None else 1.0)
            return {n: reason for n in names if (reason := self._unavailable_reason(n))}

    def _settled(self, name: str) -> bool:
        model = self._target(name)
        if model is None:
            return True
        return all(
            (entry := model.versions.get(v)) is not None
            and not entry.busy
            and (entry.state in (State.AVAILABLE, State.END) or entry.error is not None)
            for v in model.aspired
        )

    def _unavailable_reason(self, name: str) -> str | None:
        """Why none of the versions a model is meant to serve is available (None: one is).
        Versions a reload holds do not count: they are the old config's."""
        model = self._target(name)
        if model is None or model.serving():
            return None
        errors = [entry.error.message for v, entry in model.versions.items()
                  if v in model.aspired and entry.error is not None]
        if errors:
            return errors[0]
        if model.source_error is not None:
            return model.source_error.message
        if not model.aspired:
            return f"no version found under {model.config.base_path}"
        return "still loading"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._loads.shutdown(wait=False, cancel_futures=True)
        self._unloads.shutdown(wait=False, cancel_futures=True)

    # -- deciding ----------------------------------------------------------------

    def _reconcile_all(self) -> None:
        for model in [*self._models.values(), *self._staged.values()]:
            self._reconcile(model)

    def _reconcile(self, model: ModelEntry[S]) -> None:
        """Starts whatever loads and unloads the model's versions call for. Holds the lock."""
        if self._closed:
            return
        now = self._clock()
        views = [
            VersionView(
                v, entry.state, v in model.aspired, entry.busy,
                retry_due=entry.retry_due(now),
                held=v in model.held,
                failed=entry.state is State.END and entry.error is not None,
            )
            for v, entry in model.versions.items()
        ] + [VersionView(v, None, True) for v in model.aspired if v not in model.versions]
        for action, version in next_actions(views, self._options.transition):
            if action is Action.ABANDON:
                model.versions[version].state = State.END
                log.info("Version {name: %s version: %d} failed to load and is no longer "
                         "wanted (gone from disk, out of the version policy, or its model "
                         "removed): not retried", model.config.name, version)
            elif action is Action.UNLOAD:
                entry = model.versions[version]
                entry.state, entry.busy = State.UNLOADING, True
                self._unloads.submit(self._unload, model, entry)
            else:
                found = model.aspired[version]
                known = model.versions.get(version)
                if known is None or known.state is State.END:  # new, or unloaded before
                    known = model.versions[version] = VersionEntry(version, found.path,
                                                               found.fingerprint)
                known.state, known.busy, known.retry_at = State.LOADING, True, 0.0
                self._loads.submit(self._load, model, known)
        if model.removed:
            for version in [v for v, e in model.versions.items() if e.state is State.END]:
                del model.versions[version]
            if not model.versions and self._models.get(model.config.name) is model:
                del self._models[model.config.name]

    # -- doing (on worker threads) ------------------------------------------------

    def _load(self, model: ModelEntry[S], entry: VersionEntry[S]) -> None:
        name = model.config.name
        log.info("Loading servable version {name: %s version: %d} from %s",
                 name, entry.version, entry.path)
        started = self._clock()
        try:
            servable = self._loader(name, entry.path)
        except ModelLoadError as exc:
            self._observe_load(name, False, started)
            self._load_failed(model, entry, exc)
            return
        except Exception as exc:  # a loader bug must not kill the worker or hide the version
            log.exception("Unexpected error loading %s version %d", name, entry.version)
            self._observe_load(name, False, started)
            self._load_failed(model, entry, ModelLoadError(f"unexpected error: {exc}"))
            return
        seconds = self._observe_load(name, True, started)
        with self._lock:
            entry.servable, entry.state, entry.error, entry.busy = (
                servable, State.AVAILABLE, None, False
            )
            log.info("Successfully loaded servable version {name: %s version: %d} in %.0f ms%s",
                     name, entry.version, seconds * 1000, self._describe(servable))
            self._reconcile(model)
            self._lock.notify_all()

    def _observe_load(self, name: str, ok: bool, started: float) -> float:
        seconds = self._clock() - started
        if self._observer is not None:
            self._observer.load(name, ok, seconds)
        return seconds

    def _load_failed(
        self, model: ModelEntry[S], entry: VersionEntry[S], error: ServingError
    ) -> None:
        with self._lock:
            entry.attempts += 1
            entry.error, entry.busy = error, False
            retries_left = self._options.max_retries - (entry.attempts - 1)
            if retries_left > 0 and entry.version in model.aspired:
                entry.retry_at = self._clock() + self._options.retry_interval
                log.error("Failed to load servable version {name: %s version: %d}: %s; "
                          "retrying in %.1f s (%d retries left)", model.config.name,
                          entry.version, error.message, self._options.retry_interval,
                          retries_left)
            else:
                entry.state = State.END
                log.error("Failed to load servable version {name: %s version: %d}: %s",
                          model.config.name, entry.version, error.message)
            self._reconcile(model)
            self._lock.notify_all()

    def _unload(self, model: ModelEntry[S], entry: VersionEntry[S]) -> None:
        started = self._clock()
        with self._lock:
            while entry.in_flight:
                self._drained.wait()
            servable, entry.servable = entry.servable, None
        if servable is not None:
            self._close(servable)
        del servable
        release_unloaded()
        seconds = self._clock() - started
        if self._observer is not None:
            self._observer.unload(model.config.name, seconds)
        with self._lock:
            entry.state, entry.busy = State.END, False
            log.info("Unloaded servable version {name: %s version: %d} in %.0f ms",
                     model.config.name, entry.version, seconds * 1000)
            self._reconcile(model)
            self._lock.notify_all()

    def _start_due_retries(self) -> None:
        """Reconciles the models with a retry due (the ticker calls it, holding the lock)."""
        now = self._clock()
        for model in [*self._models.values(), *self._staged.values()]:
            if any(entry.retry_due(now) for entry in model.versions.values()):
                self._reconcile(model)


class _Pinned(Generic[S]):
    """``ModelManager.acquire``'s block, as a plain context manager: every request enters
    one, and a generator-based one costs several times as much."""

    __slots__ = ("_held", "_label", "_manager", "_name", "_version")

    def __init__(
        self, manager: ModelManager[S], name: str, version: int | None, label: str | None
    ) -> None:
        self._manager, self._name, self._version, self._label = manager, name, version, label

    def __enter__(self) -> tuple[int, S]:
        manager = self._manager
        with manager._lock:
            held = pin(manager._models.get(self._name), self._name, self._version, self._label)
        if held.servable is None:  # an available version always has one
            manager._release(held)
            raise AssertionError(f"version {held.version} of {self._name} has no servable")
        self._held = held
        return held.version, held.servable

    def __exit__(self, *exc_info: object) -> None:
        self._manager._release(self._held)
