"""Applies a model server config: TF Serving's ServerCore::ReloadConfig, in our terms.

A new config replaces the old one whole: models are added, removed or
changed, their versions found and loaded, then labels are assigned. Labels
are checked once the new versions have had their first load attempt, so a
config that adds version 2 and labels it canary succeeds in one step when
version 2 loads (TF Serving needs two reloads, or
--allow_version_labels_for_unavailable_models, for that).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from onnx_serving.server.config import ModelConfig
from onnx_serving.server.errors import Code, FailedPrecondition, ServingError
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.repository.poller import Poller

log = logging.getLogger(__name__)


class RepositoryCore:
    def __init__(
        self, manager: ModelManager[Any], poller: Poller, *, allow_unavailable_labels: bool
    ) -> None:
        self._manager = manager
        self._poller = poller
        self._allow_unavailable_labels = allow_unavailable_labels
        self._lock = threading.Lock()
        self.configs: list[ModelConfig] = []

    def apply(self, configs: list[ModelConfig], *, timeout: float | None = None) -> None:
        """Raises, as TF Serving answers a reload, if a new or changed model did not become
        available, or a label cannot be assigned; what could be applied stays applied.

        The first config (at start-up) assigns the labels it can and reports the others, so
        one unavailable version does not keep the rest from serving.
        """
        first = not self.configs
        with self._lock:
            before = {c.name: c for c in self.configs}
            self._manager.set_models(configs)
            self._poller.set_configs(configs)
            self._poller.scan_settled()
            changed = [c.name for c in configs if before.get(c.name) != c]
            unavailable = self._manager.wait_settled(changed, timeout)
            label_errors: list[FailedPrecondition] = []
            for config in configs:
                label_errors += self._manager.set_labels(
                    config.name, config.labels, self._allow_unavailable_labels,
                    skip_invalid=first,
                )
            self.configs = configs
        if unavailable:
            details = ", ".join(f"{{name: {n} due to error: {e}}}" for n, e in unavailable.items())
            raise ServingError(
                f"{len(unavailable)} model(s) did not become available: {{{details}}}", Code.UNKNOWN
            )
        if label_errors:
            raise label_errors[0]
