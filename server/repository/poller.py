"""Watches every model's base path and tells the manager which versions to serve."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from onnx_serving.server.errors import BasePathUnavailable
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.repository.model_config import ModelConfig
from onnx_serving.server.repository.source import SettleFilter, VersionDir, scan_versions
from onnx_serving.server.repository.storage import Backoff, Mirror, ObjectUrl

log = logging.getLogger(__name__)


class Poller:
    """Scans at start-up, then every ``interval`` seconds (0 or less: never again)."""

    def __init__(self, manager: ModelManager[Any], interval: float, cache_dir: Path) -> None:
        """``cache_dir``: where versions in object stores are copied to be loaded."""
        self._manager = manager
        self._interval = interval
        self._mirror = Mirror(cache_dir)
        self._backoff = Backoff()
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
                base = config.base_path
                try:
                    scan = functools.partial(scan_versions, config.name, base)
                    found = self._backoff.call(base, scan) if isinstance(base, ObjectUrl) \
                        else scan()
                    settled = self._settle.settled(config.name, base, found)
                    pending += len(found.keys() - settled.keys())
                    wanted = {v: settled[v] for v in config.policy.select(settled)}
                    if isinstance(base, ObjectUrl):
                        wanted = self._copied(config.name, base, found, wanted)
                except BasePathUnavailable as exc:  # what serves stays; the next scan retries
                    self._manager.cannot_list(config.name, exc)
                    continue
                self._manager.aspire(config.name, wanted)
        return pending

    def _copied(
        self, name: str, base: ObjectUrl, found: dict[int, VersionDir[ObjectUrl]],
        wanted: dict[int, VersionDir[ObjectUrl]],
    ) -> dict[int, VersionDir[Path]]:
        """The wanted versions of a base path in an object store, copied to the local
        cache; the copies of versions the store no longer holds (as they were) go."""
        copies = {
            v: VersionDir(v, self._mirror.local(name, base, d.path.name, d.fingerprint),
                          d.fingerprint)
            for v, d in wanted.items()
        }
        self._mirror.prune(base, {self._mirror.target(base, d.path.name, d.fingerprint)
                                  for d in found.values()})
        return copies

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
