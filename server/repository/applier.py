"""Applies a model server config: TF Serving's ServerCore::ReloadConfig, in our terms.

A new config replaces the old one whole: models are added, removed or
changed, their versions found and loaded, then labels are assigned. Labels
are checked once the new versions have had their first load attempt, so a
config that adds version 2 and labels it canary succeeds in one step when
version 2 loads (TF Serving needs two reloads, or
--allow_version_labels_for_unavailable_models, for that).

A reload is atomic, unlike TF Serving's (docs/lifecycle.md, "What a reload
guarantees"). The whole new config is checked before anything changes (every
label names a version the new config serves; every new or changed model has
a listable base path with a version on disk). Then the new versions load
while everything that serves keeps serving: removed models, and the versions
of changed models (held, under availability_preserving, so that "latest"
never steps back and no label names a version that is gone); a model moved
to another base path loads there beside the old one. Only when every changed
model has a wanted version available and every label can be assigned do
moved models switch, labels move, and dropped versions and removed models
unload. A reload refused at any step leaves the previous config in force and
names why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from onnx_serving.server.errors import (
    BasePathUnavailable,
    Code,
    FailedPrecondition,
    ServingError,
)
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.repository.model_config import ModelConfig
from onnx_serving.server.repository.poller import Poller
from onnx_serving.server.repository.source import scan_versions

log = logging.getLogger(__name__)


class RefusedBeforeLoading(ServingError):
    """A reload refused before it loaded anything: a model it adds or changes has no
    version on disk (yet), a base path cannot be listed, or a label names a version not
    there. Trying the same config again costs a listing of each base path."""


class ConfigApplier:
    def __init__(
        self, manager: ModelManager[Any], poller: Poller, *, allow_unavailable_labels: bool,
        on_applied: Callable[[list[ModelConfig]], None] = lambda configs: None,
    ) -> None:
        """``on_applied`` is told of each config once in force (what is logged, say)."""
        self._on_applied = on_applied
        self._manager = manager
        self._poller = poller
        self._allow_unavailable_labels = allow_unavailable_labels
        self._lock = threading.Lock()
        self.configs: list[ModelConfig] = []

    def apply(self, configs: list[ModelConfig], *, timeout: float | None = None) -> None:
        """Raises, as TF Serving answers a reload, if a new or changed model did not become
        available, or a label cannot be assigned; the previous config then stays in force.

        The first config (at start-up) assigns the labels it can and reports the others, so
        one unavailable version does not keep the rest from serving.
        """
        with self._lock:
            if not self.configs:
                self._apply_first(configs, timeout)
            else:
                self._reload(configs, timeout)

    def _apply_first(self, configs: list[ModelConfig], timeout: float | None) -> None:
        self._set(configs)
        unavailable = self._manager.wait_settled([c.name for c in configs], timeout)
        label_errors: list[FailedPrecondition] = []
        for config in configs:
            label_errors += self._manager.set_labels(
                config.name, config.labels, self._allow_unavailable_labels, skip_invalid=True
            )
        self._in_force(configs, configs)
        _raise_first(unavailable, label_errors)

    def _reload(self, configs: list[ModelConfig], timeout: float | None) -> None:
        before = {c.name: c for c in self.configs}
        changed = [c for c in configs if before.get(c.name) != c]
        loading = [c for c in changed if _loads_anew(before.get(c.name), c)]
        try:
            self._check(configs, loading)
        except ServingError as exc:
            raise RefusedBeforeLoading(exc.message, exc.code) from None
        kept = [c for name, c in before.items() if name not in {n.name for n in configs}]
        # Until the new config is in force, removed models serve, and so do the versions
        # of changed models that serve now (their labels still name them).
        with self._manager.holding(c.name for c in loading):
            self._set(configs + kept)
            unavailable = self._manager.wait_settled([c.name for c in loading], timeout)
            label_errors = [
                e.error for c in configs
                for e in self._manager.label_errors(c.name, c.labels,
                                                    self._allow_unavailable_labels)
            ]
            if unavailable or label_errors:
                log.error("Reload refused; the previous config stays in force")
                self._set(self.configs)
                _raise_first(unavailable, label_errors)
            for config in loading:
                self._manager.promote(config.name, config.labels)
            self._set(configs)
            for config in configs:
                self._manager.set_labels(config.name, config.labels,
                                         self._allow_unavailable_labels)
            self._in_force(configs, changed)

    def _in_force(self, configs: list[ModelConfig], changed: list[ModelConfig]) -> None:
        """Logs what the changed models now serve, and tells ``on_applied``."""
        self.configs = configs
        for config in changed:
            labels = ", ".join(f"{k}: {v}" for k, v in sorted(self._manager.labels(config.name)
                                                              .items()))
            log.info("Model %s now serves versions %s with labels {%s}", config.name,
                     self._manager.serving_versions(config.name), labels)
        self._on_applied(configs)

    def _check(self, configs: list[ModelConfig], loading: list[ModelConfig]) -> None:
        """What can be known before loading anything: versions on disk, and labels."""
        coming: dict[str, set[int]] = {}
        missing: dict[str, str] = {}
        for config in loading:
            try:
                found = scan_versions(config.name, config.base_path)
            except BasePathUnavailable as exc:
                missing[config.name] = exc.message
                continue
            coming[config.name] = config.policy.select(found)
            if not coming[config.name]:
                missing[config.name] = f"no version found under {config.base_path}"
        errors = [
            e.error for c in configs
            for e in self._manager.label_errors(
                c.name, c.labels, self._allow_unavailable_labels, coming.get(c.name)
            )
        ]
        _raise_first(missing, errors)

    def _set(self, configs: list[ModelConfig]) -> None:
        self._manager.set_models(configs)
        self._poller.set_configs(configs)
        self._poller.scan_settled()


def _loads_anew(before: ModelConfig | None, after: ModelConfig) -> bool:
    """Whether ``after`` asks for versions ``before`` did not: a new model, another base
    path or policy. A change of labels (or request log) alone loads nothing: its labels
    are checked against the versions serving, as TF Serving checks them, and a newer
    version that never loads does not refuse it."""
    return before is None or (before.base_path, before.policy) != (after.base_path, after.policy)


def _raise_first(unavailable: dict[str, str], label_errors: list[FailedPrecondition]) -> None:
    if unavailable:
        details = ", ".join(f"{{name: {n} due to error: {e}}}" for n, e in unavailable.items())
        raise ServingError(
            f"{len(unavailable)} model(s) did not become available: {{{details}}}", Code.UNKNOWN
        )
    if label_errors:
        raise label_errors[0]
