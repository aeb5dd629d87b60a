"""Watches the model config file (--model_config_file_poll_wait_seconds) and applies it.

TF Serving's server.cc polls the file the same way: each change is read whole
and handed to ServerCore::ReloadConfig. A file that does not parse, or cannot be
read, changes nothing; one that sets no config (empty, or only comments) is
taken as no action (``read_config_update``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from onnx_serving.server.errors import ServingError
from onnx_serving.server.repository.model_config import ModelConfig, read_config_update
from onnx_serving.server.repository.storage import Location, read_text

log = logging.getLogger(__name__)


class ConfigFilePoller:
    """Re-reads ``path`` every ``interval`` seconds (0 or less: never) and calls ``apply``
    with each new config (the ConfigApplier's)."""

    def __init__(
        self, path: Location, interval: float, apply: Callable[[list[ModelConfig]], None]
    ) -> None:
        self._path = path
        self._interval = interval
        self._apply = apply
        self._stop = threading.Event()

    def start(self) -> None:
        if self._interval > 0:
            threading.Thread(target=self._run, name="config-poller", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        path = self._path
        try:
            last = read_text(path)
        except OSError:
            last = ""
        while not self._stop.wait(self._interval):
            try:
                text = read_text(path)
            except OSError as exc:
                log.error("Cannot re-read model config file %s: %s", path, exc)
                continue
            if text == last:
                continue
            last = text
            log.info("Model config file %s changed; reloading", path)
            try:
                configs = read_config_update(path)
                if configs is None:
                    log.info("Taking no action for empty config %s", path)
                    continue
                self._apply(configs)
            except ServingError as exc:
                log.error("Reloading %s: %s", path, exc.message)
