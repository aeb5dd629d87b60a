"""Watches every model's base path and tells the manager which versions to serve."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from onnx_serving.server.errors import BasePathUnavailable
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.repository.model_config import ModelConfig
from onnx_serving.server.repository.source import SettleFilter, scan_versions

log = logging.getLogger(__name__)


class Poller:
    """Scans at start-up, then every ``interval`` seconds (0 or less: never again)."""

    def __init__(self, manager: ModelManager[Any], interval: float) -> None:
        self._manager = manager
        self._interval = interval
        self._configs: list[ModelConfig] = []
        self._settle = SettleFilter()
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_configs(self, configs: Iterable[ModelConfig]) -> None:
        with self._scan_lock:
            configs = list(configs)
            for gone in {c.name for c in self._configs} - {c.name for c in configs}:
                self._settle.forget(gone)
            self._configs = configs

    def scan(self) -> int:
        """One pass over every model: the versions on disk, settled, through its policy.

        Returns how many versions are on disk but not settled yet.
        """
        pending = 0
        with self._scan_lock:
            for config in self._configs:
                try:
                    found = scan_versions(config.name, config.base_path)
                except BasePathUnavailable as exc:  # what serves stays; the next scan retries
                    self._manager.cannot_list(config.name, exc)
                    continue
                settled = self._settle.settled(config.name, config.base_path, found)
                pending += len(found.keys() - settled.keys())
                wanted = config.policy.select(settled)
                self._manager.aspire(config.name, {v: settled[v] for v in wanted})
        return pending

    def scan_settled(self, attempts: int = 10, pause: float = 0.2) -> None:
        """Scans until no version is mid-copy (or ``attempts`` run out): a reload should
        see versions published just before it, not one poll later."""
        for _ in range(attempts):
            if not self.scan():
                return
            time.sleep(pause)

    def start(self) -> None:
        if self._interval > 0:
            self._thread = threading.Thread(target=self._run, name="poller", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.scan()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
