"""SavedModel versions converted to ONNX at load, so a TF Serving repository serves as it is.

A version directory that holds a ``saved_model.pb`` and no ``model.onnx`` (nor
``signatures.json``) is what TFX's Pusher or ``model.export`` writes, and what TF Serving
loads. The loader asks ``Conversions.prepare`` for the directory to load: a SavedModel's
is its ONNX conversion, made by ``onnx-serving convert``'s own machinery in a child
process (``migration/convert_at_load.py``), so TensorFlow never enters the serving
process, and validated exactly as ``convert`` validates (TensorFlow's answers, the warmup
records replayed). Running in the loader keeps everything else as it is: the version is
LOADING while it converts, a failure is its load error (GetModelStatus and the log, with
convert's report) and never displaces what serves, and the version policy, labels, warmup
and the swap are the manager's as for any version.

Conversions are cached by content, at ``<cache dir>/<hash of the SavedModel's files and
of the converter>``: a restart, or a second replica sharing the cache, loads the cached
conversion. A conversion is written under a temporary name and renamed into place, so a
cache entry is whole or absent. At most ``concurrent`` conversions run at once, each for
at most ``timeout_s``: a hung conversion must not hold a load thread for ever.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx_serving.codec.served_model import DEFAULT_MODEL_FILE, SIGNATURES_FILE
from onnx_serving.server.errors import ModelLoadError

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
INSTALL = "pip install 'onnx-serving[migration]'"
CHILD = "onnx_serving.migration.convert_at_load"
# Lines of a failed conversion's log quoted when it left no report (a crash, a kill).
_LOG_TAIL_LINES = 5


def default_cache_dir() -> Path:
    """Beside the object-store cache (server/repository/storage.py)."""
    return Path(tempfile.gettempdir()) / f"onnx-serving-converted-{os.getuid()}"


@dataclass(frozen=True)
class ConversionOptions:
    """``--convert_saved_models``, ``--saved_model_cache_dir``,
    ``--num_saved_model_conversions``, ``--saved_model_conversion_memory_mb``,
    ``--saved_model_conversion_timeout_seconds``."""

    enabled: bool = True
    cache_dir: Path = field(default_factory=default_cache_dir)
    concurrent: int = 1
    memory_mb: int = 0  # RLIMIT_AS of each conversion process; 0: none
    timeout_s: int = 1800  # then the conversion is killed and the load fails; <= 0: none


def holds_saved_model(version_dir: Path) -> bool:
    """A SavedModel and nothing onnx-serving loads (a converted version keeps neither)."""
    return (version_dir / SAVED_MODEL_FILE).is_file() and not any(
        (version_dir / name).exists() for name in (DEFAULT_MODEL_FILE, SIGNATURES_FILE)
    )


def how_to_convert(version_dir: Path) -> str:
    """The ``onnx-serving convert`` command that converts the version's base path."""
    base = version_dir.parent
    return (f"`onnx-serving convert {base} {base}_onnx` and --model_base_path={base}_onnx "
            "(docs/migration.md)")


class Conversions:
    """The loader's view of SavedModel versions: ``prepare`` gives the directory to load."""

    def __init__(self, options: ConversionOptions | None = None) -> None:
        self.options = options = options or ConversionOptions()
        self._slots = threading.Semaphore(max(1, options.concurrent))
        self._lock = threading.Lock()
        self._converting: dict[str, threading.Lock] = {}  # one conversion per content
        # Content → why it cannot convert, when that will not change by trying again (a
        # validation failure, TensorFlow missing): load retries fail at once. A restart
        # forgets it; changed files are other content.
        self._failed: dict[str, str] = {}
        self._running: set[subprocess.Popen[bytes]] = set()
        self._closed = False

    def prepare(self, version_dir: Path) -> Path:
        """``version_dir`` itself, or the ONNX conversion of the SavedModel it holds:
        cached, or converted now (blocking this load thread). ModelLoadError says why not."""
        if not holds_saved_model(version_dir):
            return version_dir
        if not self.options.enabled:
            raise ModelLoadError(
                f"{version_dir} has no model file {DEFAULT_MODEL_FILE}: it holds a TensorFlow "
                "SavedModel, and --convert_saved_models=false. Convert it first, then serve "
                f"the converted base path: {how_to_convert(version_dir)}"
            )
        try:
            key = content_key(version_dir)
            target = self.options.cache_dir / key
            with self._lock:
                one = self._converting.setdefault(key, threading.Lock())
            with one:
                if target.is_dir():
                    log.info("Loading %s from its ONNX conversion cached at %s",
                             version_dir, target)
                    return target
                if key in self._failed:
                    raise ModelLoadError(self._failed[key])
                with self._slots:
                    self._convert(version_dir, key, target)
        except OSError as exc:  # the version or the cache cannot be read or written
            raise ModelLoadError(f"Cannot convert the TensorFlow SavedModel in {version_dir} "
                                 f"to ONNX: {exc}") from exc
        return target

    def close(self) -> None:
        """Stops the conversions running (at shutdown); none starts after."""
        with self._lock:
            self._closed = True
            for process in self._running:
                _kill(process)

    def _convert(self, version_dir: Path, key: str, target: Path) -> None:
        cache = self.options.cache_dir
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.partial-", dir=cache))
        converted, report_file = work / "onnx", work / "report.json"
        log_file = cache / f"{key}.log"
        command = [sys.executable, "-m", CHILD, str(version_dir), str(converted),
                   str(report_file), f"--parent_pid={os.getpid()}",
                   f"--memory_mb={self.options.memory_mb}"]
        log.info("Converting the TensorFlow SavedModel in %s to ONNX in a separate process "
                 "(onnx-serving convert; its log: %s)", version_dir, log_file)
        try:
            with log_file.open("wb") as output:
                with self._lock:
                    if self._closed:
                        raise ModelLoadError(f"{version_dir}: the server is stopping")
                    # Its own process group, so that a kill reaches tf2onnx's child too.
                    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
                    self._running.add(process)
                limit = self.options.timeout_s
                try:
                    code = process.wait(limit if limit > 0 else None)
                except subprocess.TimeoutExpired:
                    _kill(process)
                    process.wait()
                    # Remembered: retrying would hold a load thread as long again.
                    self._failed[key] = _timed_out(version_dir, log_file, self.options)
                    raise ModelLoadError(self._failed[key]) from None
                finally:
                    with self._lock:
                        self._running.discard(process)
            report = _read_report(report_file)
            if report is None:
                raise ModelLoadError(_crashed(version_dir, code, log_file, self.options))
            self._finish(version_dir, key, report, converted, target, log_file)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _finish(self, version_dir: Path, key: str, report: dict[str, Any], converted: Path,
                target: Path, log_file: Path) -> None:
        problems = "; ".join(map(str, report.get("problems") or [])) or "no reason given"
        if report.get("status") == "missing":
            why = (f"{version_dir} holds a TensorFlow SavedModel; converting it at load needs "
                   f"the migration extra ({problems}): {INSTALL}, or convert it first and "
                   f"serve the converted base path: {how_to_convert(version_dir)}")
        elif report.get("status") != "converted":
            why = (f"Converting the TensorFlow SavedModel in {version_dir} to ONNX failed, so "
                   f"it is not served: {problems} (onnx-serving convert's log: {log_file})")
        else:
            _publish(converted, target)
            log.info("Converted the TensorFlow SavedModel in %s to ONNX in %.1f s (signatures "
                     "%s; max abs error %.3g against TensorFlow; the conversion's peak memory "
                     "%s MB); cached at %s", version_dir, report.get("seconds", 0.0),
                     ", ".join(map(str, report.get("signatures") or [])),
                     report.get("max_abs", 0.0), report.get("peak_memory_mb"), target)
            return
        self._failed[key] = why
        raise ModelLoadError(why)


def content_key(version_dir: Path) -> str:
    """A hash of every file of the version (path, size, bytes) and of the converter (its
    version: a new release converts again)."""
    digest = hashlib.sha256(f"onnx-serving {_converter_version()}\n".encode())
    for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(version_dir)}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def _converter_version() -> str:
    try:
        return importlib.metadata.version("onnx-serving")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout
        return "unreleased"


def _read_report(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        report = json.loads(path.read_text())
        if isinstance(report, dict):
            return report
    return None


def _crashed(version_dir: Path, code: int, log_file: Path, options: ConversionOptions) -> str:
    """Why a conversion that left no report ended. Not remembered: it may pass next time."""
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    if options.memory_mb:
        how += f" (its memory is limited to {options.memory_mb} MB: " \
               "--saved_model_conversion_memory_mb)"
    with contextlib.suppress(OSError):
        tail = log_file.read_text(errors="replace").strip().splitlines()[-_LOG_TAIL_LINES:]
        how += f"; its log ends: {' | '.join(tail)}" if tail else ""
    return (f"Converting the TensorFlow SavedModel in {version_dir} to ONNX failed: the "
            f"conversion process {how} (onnx-serving convert's log: {log_file})")


def _timed_out(version_dir: Path, log_file: Path, options: ConversionOptions) -> str:
    return (f"Converting the TensorFlow SavedModel in {version_dir} to ONNX failed: it ran "
            f"longer than --saved_model_conversion_timeout_seconds={options.timeout_s} and was "
            f"stopped (onnx-serving convert's log: {log_file})")


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kills a conversion and the processes it started (its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _publish(converted: Path, target: Path) -> None:
    """Renames the whole conversion into the cache; one another process published first
    (a replica sharing the cache) is as good."""
    try:
        converted.rename(target)
    except OSError:
        if not target.is_dir():
            raise
