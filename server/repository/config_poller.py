"""Watches the model config file (--model_config_file_poll_wait_seconds) and applies it.

TF Serving's server.cc polls the file the same way and hands each config to
ServerCore::ReloadConfig. A file that does not parse, or cannot be read, changes
nothing; one that sets no config (empty, or only comments) is taken as no action
(``read_config_update``). Here a reload is applied only when the file's text differs
from the one in force, read when the server read its first config (an edit made while
the first models load is applied once the poller starts), so a config given by
HandleReloadConfigRequest stays until the file changes. A config that is refused is
tried again until it is in force or the file changes: at every poll while it is
refused before anything loads (a model added before its versions are copied in
serves once they are there, as TF Serving's would), else after twice the wait of the
previous try, from one poll up to ``MAX_RETRY_WAIT`` (a version that fails to load is
not loaded again every poll, and a fixed copy is still found).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from onnx_serving.server.errors import ServingError
from onnx_serving.server.repository.applier import RefusedBeforeLoading
from onnx_serving.server.repository.model_config import ModelConfig, read_config_update
from onnx_serving.server.repository.storage import Location, read_text

log = logging.getLogger(__name__)

MAX_RETRY_WAIT: Final = 600.0


class ConfigFilePoller:
    """Re-reads ``path`` every ``interval`` seconds (0 or less: never) and calls ``apply``
    with each new config (the ConfigApplier's). Made when the first config is read: its
    text is the one in force."""

    def __init__(
        self, path: Location, interval: float, apply: Callable[[list[ModelConfig]], None]
    ) -> None:
        self._path = path
        self._interval = interval
        self._apply = apply
        self._stop = threading.Event()
        self._in_force = self._read()
        self._refused: _Refused | None = None

    def start(self) -> None:
        if self._interval > 0:
            threading.Thread(target=self._run, name="config-poller", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll()

    def _poll(self) -> None:
        """One look at the file: a reload if its text is not the one in force, unless it
        is a refused one whose next try is not due."""
        path = self._path
        try:
            text = read_text(path)
        except (OSError, UnicodeDecodeError) as exc:  # a poll must not end the poller
            log.error("Cannot re-read model config file %s: %s", path, exc)
            return
        if text == self._in_force:
            self._refused = None
            return
        previous = self._refused if self._refused is not None \
            and self._refused.text == text else None
        if previous is None:
            log.info("Model config file %s changed; reloading", path)
        elif not previous.due(self._interval):
            return
        try:
            configs = read_config_update(path)
            if configs is None:
                log.info("Taking no action for empty config %s", path)
            else:
                self._apply(configs)
            self._in_force, self._refused = text, None
        except ServingError as exc:
            if previous is None or exc.message != previous.message:
                log.error("Reloading %s: %s", path, exc.message)
            if isinstance(exc, RefusedBeforeLoading):
                wait = 0.0  # at every poll: a listing is all a try costs
            elif previous is not None and previous.wait:
                wait = min(MAX_RETRY_WAIT, 2 * previous.wait)
            else:
                wait = self._interval
            self._refused = _Refused(text, exc.message, wait)

    def _read(self) -> str | None:
        try:
            return read_text(self._path)
        except (OSError, UnicodeDecodeError):
            return None


class _Refused:
    """A config text that was refused, why, and how long after to try it again (0: at
    every poll)."""

    def __init__(self, text: str, message: str, wait: float) -> None:
        self.text, self.message, self.wait = text, message, wait
        self._polls = 0

    def due(self, interval: float) -> bool:
        """Counts a poll; whether the text is to be tried at this one."""
        self._polls += 1
        return self._polls * interval >= self.wait
