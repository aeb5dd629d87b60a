"""Loading one model version for serving: a Loader in TF Serving's sense.

The repository's manager decides when a version loads and unloads
(repository/manager.py); it calls ``load`` on a worker thread with the model's
name and the version's folder, and ``unload`` once the version's last request
is done. Loading is what TF Serving's SavedModelBundleFactory and
saved_model_warmup.cc do together, in our terms: the ONNX Runtime sessions
(runtime/model.py), a batcher per signature under --enable_batching (a version's
own batching_params.pbtxt under --enable_per_model_batching_parameters, the
threads shared), then warmup through the serving core, timed into the metrics.
A version holding a TensorFlow SavedModel is loaded from its ONNX conversion
(repository/conversion.py), made first if it is not cached.
Nothing here knows which versions should be served.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnx_serving.server.batching import (
    Batcher,
    BatchingOptions,
    BatchScheduler,
    read_batching_parameters,
)
from onnx_serving.server.errors import ConfigError, ModelLoadError
from onnx_serving.server.metrics import Metrics
from onnx_serving.server.repository.conversion import Conversions
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.model import Batching, LoadedModel, load
from onnx_serving.server.runtime.signature import Signature
from onnx_serving.server.serving.core import ServingCore
from onnx_serving.server.warmup import WarmupOptions, warm_up

log = logging.getLogger(__name__)

# TF Serving's per-model batching file, read with --enable_per_model_batching_parameters.
PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"


class ModelLoader:
    def __init__(
        self,
        runtime: RuntimeConfig,
        warmup: WarmupOptions,
        core: ServingCore,
        metrics: Metrics,
        *,
        batching: BatchingOptions | None = None,
        per_model_batching: bool = False,
        conversions: Conversions | None = None,
    ) -> None:
        """``core`` runs each version's warmup requests (with its checks and request log);
        ``batching``: the server's parameters under --enable_batching, None without;
        ``conversions``: SavedModel versions' ONNX conversions (None: a default one)."""
        self._conversions = conversions or Conversions()
        self._runtime = runtime
        self._warmup = warmup
        self._core = core
        self._metrics = metrics
        self._batching = batching
        self._per_model_batching = per_model_batching
        self._scheduler = BatchScheduler(
            batching.num_batch_threads, batching.thread_pool_name
        ) if batching is not None else None

    def load(self, name: str, version_dir: Path) -> LoadedModel:
        """Version ``version_dir`` of model ``name``, ready to serve; ModelLoadError if not."""
        # A SavedModel's ONNX conversion; runtime.json and batching_params.pbtxt are read
        # beside the version itself.
        model_dir = self._conversions.prepare(version_dir)
        model = load(model_dir, self._runtime, self._batching_for(name, version_dir),
                     version_dir)
        started = time.perf_counter()
        try:
            warmed = warm_up(model, model_dir, self._warmup, self._core)
        except ModelLoadError as exc:
            self._metrics.warmup(str(version_dir), exc, time.perf_counter() - started)
            raise
        if warmed:
            self._metrics.warmup(str(version_dir), None, time.perf_counter() - started)
        return model

    @staticmethod
    def unload(model: LoadedModel) -> None:
        model.close()

    @staticmethod
    def describe(model: LoadedModel) -> str:
        """What a load's log line adds: the providers and threads in use."""
        return f" on {', '.join(model.providers)} ({model.threads})"

    def _batching_for(self, name: str, version_dir: Path) -> Batching | None:
        """One Batcher per signature on the shared threads, or None without --enable_batching.

        With --enable_per_model_batching_parameters a version's own batching_params.pbtxt
        replaces the server's parameters (the threads stay shared, as in TF Serving).
        """
        if self._batching is None or self._scheduler is None:
            return None
        options, scheduler = self._batching, self._scheduler
        own = version_dir / PER_MODEL_BATCHING_FILE
        if self._per_model_batching and own.is_file():
            try:
                options = read_batching_parameters(own)
            except ConfigError as exc:
                raise ModelLoadError(exc.message) from exc
        observe = functools.partial(self._metrics.batch, name, options.thread_pool_name)

        def batcher(_signature: Signature, run: Callable[[dict[str, Any]], Any]) -> Batcher:
            return Batcher(run, options, observe, scheduler)

        return batcher

    def log_batching(self) -> None:
        """Says at start-up whether batching is on, and how."""
        if self._batching is None:
            log.info("Batching is off (--enable_batching)")
            return
        b = self._batching
        log.info("Batching is on: max_batch_size %d, batch_timeout_micros %d, "
                 "max_enqueued_batches %d, %d batch thread(s)%s", b.max_batch_size,
                 b.batch_timeout_micros, b.max_enqueued_batches, b.num_batch_threads,
                 ", per-model parameters allowed" if self._per_model_batching else "")

    def close(self) -> None:
        """Stops the conversions running and the shared batch threads (after the manager
        has stopped loading)."""
        self._conversions.close()
        if self._scheduler is not None:
            self._scheduler.close()
