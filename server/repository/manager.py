"""Which versions are loaded, and which one answers a request.

The manager owns the state of every model version, and nothing about how a
version is loaded (that is the injected ``loader``) or where versions come
from (a source calls ``aspire`` with the complete list it wants served, as
TF Serving's sources do; omission means "unload").

Loads and unloads run on worker threads, never on a request's. The
transition policy decides their order:

- availability preserving (the default, as TF Serving): a new version is
  loaded, warmed and AVAILABLE before an old one goes, and an old version
  keeps serving while no wanted version is available (a failed new version
  never takes the model down);
- resource preserving: old versions go first, so memory never holds two.

Requests hold a version through ``acquire``; an unload waits until the
requests in flight on that version have finished, then drops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from onnx_serving.server.config import ModelConfig
from onnx_serving.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelLoadError,
    NotFound,
    ServableNotFound,
    ServingError,
)
from onnx_serving.server.repository.source import Fingerprint, VersionDir

log = logging.getLogger(__name__)

S = TypeVar("S")


class State(enum.IntEnum):
    """TF Serving's ModelVersionStatus.State, with its numbers."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


class Transition(enum.Enum):
    AVAILABILITY_PRESERVING = "availability_preserving"
    RESOURCE_PRESERVING = "resource_preserving"


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: State
    error: ServingError | None = None


@dataclass(frozen=True)
class LoadOptions:
    """Retry policy and worker counts, TF Serving's defaults."""

    max_retries: int = 5
    retry_interval: float = 60.0
    load_threads: int = 1
    unload_threads: int = 1
    transition: Transition = Transition.AVAILABILITY_PRESERVING


@dataclass
class _Version(Generic[S]):
    version: int
    path: Path
    fingerprint: Fingerprint
    state: State = State.START
    error: ServingError | None = None
    servable: S | None = None
    in_flight: int = 0
    attempts: int = 0
    retry_at: float = 0.0
    busy: bool = False  # a load or unload of it is running

    def status(self) -> VersionStatus:
        return VersionStatus(self.version, self.state, self.error)


@dataclass
class _Model(Generic[S]):
    config: ModelConfig
    aspired: dict[int, VersionDir] = field(default_factory=dict)
    versions: dict[int, _Version[S]] = field(default_factory=dict)
    removed: bool = False

    def available(self) -> list[int]:
        return [v for v, s in self.versions.items() if s.state is State.AVAILABLE]


@dataclass(frozen=True)
class LabelError:
    label: str
    error: FailedPrecondition


class LifecycleObserver(Protocol):
    """Told of every load and unload (the metrics are one)."""

    def load(self, model: str, ok: bool, seconds: float) -> None: ...

    def unload(self, model: str, seconds: float) -> None: ...


class ModelManager(Generic[S]):
    def __init__(
        self,
        loader: Callable[[Path], S],
        options: LoadOptions | None = None,
        *,
        observer: LifecycleObserver | None = None,
        describe: Callable[[S], str] = lambda servable: "",
        close: Callable[[S], None] = lambda servable: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``describe`` adds to the log line of a load (the providers in use, say);
        ``close`` runs on an unload once its requests are done, before the servable goes."""
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
        self._models: dict[str, _Model[S]] = {}
        self._loads = ThreadPoolExecutor(max(1, self._options.load_threads), "load")
        self._unloads = ThreadPoolExecutor(max(1, self._options.unload_threads), "unload")
        self._closed = False
        self._ticker = threading.Thread(target=self._tick_retries, name="retries", daemon=True)
        self._ticker.start()

    # -- what should be served ---------------------------------------------------

    def set_models(self, configs: Iterable[ModelConfig]) -> None:
        """Replaces the model set: new models start empty, absent ones are unloaded."""
        configs = list(configs)
        with self._lock:
            wanted = {c.name for c in configs}
            for name, model in self._models.items():
                if name not in wanted:
                    model.removed = True
                    model.aspired = {}
            for config in configs:
                # Labels change only through set_labels, once versions have loaded.
                current = self._models.get(config.name)
                if current is None or current.removed:
                    self._models[config.name] = _Model(replace(config, labels={}))
                else:
                    current.config = replace(config, labels=current.config.labels)
            self._reconcile_all()

    def aspire(self, name: str, versions: Mapping[int, VersionDir]) -> None:
        """The complete set of versions the source wants served for one model."""
        with self._lock:
            model = self._models.get(name)
            if model is None or model.removed:
                return
            for version, found in versions.items():
                known = model.versions.get(version)
                if known is None or known.state is not State.END or known.busy:
                    continue
                # An unloaded version wanted again (a rollback), or a failed one whose
                # files changed (a fixed copy), starts afresh.
                if known.error is None or known.fingerprint != found.fingerprint:
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
        coming: Iterable[int] = (),
    ) -> list[LabelError]:
        """The labels TF Serving's rule refuses, changing nothing; versions in ``coming``
        count as available (a reload checks labels before loading what it adds)."""
        with self._lock:
            model = self._models.get(name)
            live = model is not None and not model.removed
            available = set(model.available()) if model is not None and live else set()
            current = model.config.labels if model is not None and live else {}
            available.update(coming)
            return [
                LabelError(label, FailedPrecondition(
                    f"Request to assign label to version {version} of model {name}, "
                    "which is not currently available for inference"
                ))
                for label, version in labels.items()
                if version not in available
                and not (allow_unavailable and current.get(label) in (None, version))
            ]

    # -- how it is served -----------------------------------------------------

    @contextlib.contextmanager
    def acquire(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Iterator[tuple[int, S]]:
        """Pins the answering version for one request: by label, number, or the highest."""
        held = self._pin(name, version, label)
        try:
            assert held.servable is not None
            yield held.version, held.servable
        finally:
            with self._lock:
                held.in_flight -= 1
                if held.in_flight == 0:
                    self._drained.notify_all()

    def _pin(self, name: str, version: int | None, label: str | None) -> _Version[S]:
        with self._lock:
            model = self._models.get(name)
            if model is not None and model.removed:
                model = None
            if label is not None:
                labelled = model.config.labels.get(label) if model else None
                if labelled is None:
                    raise InvalidArgument(f"Unrecognized servable version label: {label}")
                version = labelled
            if model is not None:
                available = model.available()
                if version is None and available:
                    version = max(available)
                held = model.versions.get(version) if version is not None else None
                if held is not None and held.state is State.AVAILABLE:
                    held.in_flight += 1
                    return held
        raise ServableNotFound(name, version)

    def statuses(self, name: str, version: int | None = None) -> list[VersionStatus]:
        """Every version seen, highest first, as GetModelStatus reports them."""
        with self._lock:
            model = self._models.get(name)
            statuses = {v: s.status() for v, s in model.versions.items()} if model else {}
        if version is not None:
            if version not in statuses:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise NotFound(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(n for n, m in self._models.items() if not m.removed)

    def available(self) -> dict[str, list[S]]:
        """A snapshot of what serves now, by model (for metrics)."""
        with self._lock:
            return {
                name: [s.servable for s in m.versions.values()
                       if s.state is State.AVAILABLE and s.servable is not None]
                for name, m in self._models.items() if not m.removed
            }

    def in_flight(self) -> dict[str, int]:
        """Requests holding a version now, by model: how busy each model is (autoscaling)."""
        with self._lock:
            return {
                name: sum(s.in_flight for s in m.versions.values())
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
        model = self._models.get(name)
        if model is None:
            return True
        return all(
            (s := model.versions.get(v)) is not None
            and not s.busy
            and (s.state in (State.AVAILABLE, State.END) or s.error is not None)
            for v in model.aspired
        )

    def _unavailable_reason(self, name: str) -> str | None:
        model = self._models.get(name)
        if model is None or model.available():
            return None
        errors = [s.error.message for s in model.versions.values() if s.error is not None]
        if errors:
            return errors[0]
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
        for model in list(self._models.values()):
            self._reconcile(model)

    def _reconcile(self, model: _Model[S]) -> None:
        """Starts whatever loads and unloads the model's state calls for. Holds the lock."""
        if self._closed:
            return
        for version, state in list(model.versions.items()):
            if version in model.aspired or state.busy:
                continue
            if state.state is State.LOADING:  # waiting to retry, and no longer wanted
                state.state = State.END
            if state.state is State.END and model.removed:
                del model.versions[version]
        for version in self._to_unload(model):
            state = model.versions[version]
            state.state, state.busy = State.UNLOADING, True
            self._unloads.submit(self._unload, model, state)
        now = self._clock()
        for version, found in sorted(model.aspired.items(), reverse=True):
            known = model.versions.get(version)
            if known is None:
                if self._must_wait_for_unloads(model):
                    continue
                known = model.versions[version] = _Version(version, found.path, found.fingerprint)
            state = known
            due = state.state is State.LOADING and 0 < state.retry_at <= now
            if state.busy or (state.state is not State.START and not due):
                continue
            state.state, state.busy, state.retry_at = State.LOADING, True, 0.0
            self._loads.submit(self._load, model, state)
        if model.removed and not model.versions:
            self._models.pop(model.config.name, None)

    def _to_unload(self, model: _Model[S]) -> list[int]:
        unwanted = [
            v for v, s in model.versions.items()
            if v not in model.aspired and s.state is State.AVAILABLE and not s.busy
        ]
        if not unwanted:
            return []
        wanted_available = any(
            s.state is State.AVAILABLE for v, s in model.versions.items() if v in model.aspired
        )
        resource = self._options.transition is Transition.RESOURCE_PRESERVING
        if wanted_available or not model.aspired or resource:
            return unwanted
        return []  # keep serving the old version until a wanted one is available

    def _must_wait_for_unloads(self, model: _Model[S]) -> bool:
        if self._options.transition is not Transition.RESOURCE_PRESERVING:
            return False
        return any(
            s.state in (State.AVAILABLE, State.UNLOADING)
            for v, s in model.versions.items() if v not in model.aspired
        )

    # -- doing (on worker threads) ------------------------------------------------

    def _load(self, model: _Model[S], state: _Version[S]) -> None:
        name = model.config.name
        log.info("Loading servable version {name: %s version: %d} from %s",
                 name, state.version, state.path)
        started = self._clock()
        try:
            servable = self._loader(state.path)
        except ModelLoadError as exc:
            self._observe_load(name, False, started)
            self._load_failed(model, state, exc)
            return
        except Exception as exc:  # a loader bug must not kill the worker or hide the version
            log.exception("Unexpected error loading %s version %d", name, state.version)
            self._observe_load(name, False, started)
            self._load_failed(model, state, ModelLoadError(f"unexpected error: {exc}"))
            return
        seconds = self._observe_load(name, True, started)
        with self._lock:
            state.servable, state.state, state.error, state.busy = (
                servable, State.AVAILABLE, None, False
            )
            log.info("Successfully loaded servable version {name: %s version: %d} in %.0f ms%s",
                     name, state.version, seconds * 1000, self._describe(servable))
            self._reconcile(model)
            self._lock.notify_all()

    def _observe_load(self, name: str, ok: bool, started: float) -> float:
        seconds = self._clock() - started
        if self._observer is not None:
            self._observer.load(name, ok, seconds)
        return seconds

    def _load_failed(self, model: _Model[S], state: _Version[S], error: ServingError) -> None:
        with self._lock:
            state.attempts += 1
            state.error, state.busy = error, False
            retries_left = self._options.max_retries - (state.attempts - 1)
            if retries_left > 0 and state.version in model.aspired:
                state.retry_at = self._clock() + self._options.retry_interval
                log.error("Failed to load servable version {name: %s version: %d}: %s; "
                          "retrying in %.1f s (%d retries left)", model.config.name,
                          state.version, error.message, self._options.retry_interval,
                          retries_left)
            else:
                state.state = State.END
                log.error("Failed to load servable version {name: %s version: %d}: %s",
                          model.config.name, state.version, error.message)
            self._reconcile(model)
            self._lock.notify_all()

    def _unload(self, model: _Model[S], state: _Version[S]) -> None:
        started = self._clock()
        with self._lock:
            while state.in_flight:
                self._drained.wait()
            servable, state.servable = state.servable, None
        if servable is not None:
            self._close(servable)
        del servable
        gc.collect()
        _return_freed_memory()
        seconds = self._clock() - started
        if self._observer is not None:
            self._observer.unload(model.config.name, seconds)
        with self._lock:
            state.state, state.busy = State.END, False
            log.info("Unloaded servable version {name: %s version: %d} in %.0f ms",
                     model.config.name, state.version, seconds * 1000)
            self._reconcile(model)
            self._lock.notify_all()

    def _tick_retries(self) -> None:
        """Starts retries whose time has come."""
        while True:
            with self._lock:
                if self._closed:
                    return
                self._lock.wait(0.1)
                now = self._clock()
                for model in list(self._models.values()):
                    if any(s.state is State.LOADING and not s.busy and s.retry_at
                           and s.retry_at <= now for s in model.versions.values()):
                        self._reconcile(model)


def _return_freed_memory() -> None:
    """Hands freed heap pages back to the OS (glibc keeps them otherwise)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.malloc_trim(0)
