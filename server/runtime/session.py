"""One ONNX Runtime session per model file, and the quirks of its Python API.

ONNX Runtime's Python API carries text as ``str`` (a ``bytes`` element turns
into its repr), and has no numpy type for bfloat16 or the float8 types.
Requests carry DT_STRING as bytes: they are decoded as UTF-8 here, and an
element that is not valid UTF-8 is refused rather than changed; encoded images
an input decodes before the graph (images.py) are decoded instead. The
ml_dtypes types travel as OrtValues built from their raw bits.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from onnx_serving.server.errors import (
    Cancelled,
    InvalidArgument,
    ModelLoadError,
    ResourceExhausted,
    ServingError,
)
from onnx_serving.server.runtime import extensions
from onnx_serving.server.runtime.binding import BoundRunner
from onnx_serving.server.runtime.config import CPU, Provider, RuntimeConfig
from onnx_serving.server.runtime.deadline import Deadline, run_options
from onnx_serving.server.runtime.dtypes import ONNX_BY_NUMPY, RAW_BITS
from onnx_serving.server.runtime.gpu_memory import CUDA, with_memory_limit
from onnx_serving.server.runtime.graph import Graph
from onnx_serving.server.runtime.ort_errors import ORT_ERRORS
from onnx_serving.server.runtime.threads import (
    SPINNING,
    Slots,
    Threads,
    choose,
    start_global_pools,
)

log = logging.getLogger(__name__)



def describe_install() -> str:
    """One log line on the ONNX Runtime in use, warning of a doubled install."""
    from importlib.metadata import PackageNotFoundError, distribution

    installed = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{name} {distribution(name).version}")
        except PackageNotFoundError:
            continue
    line = (
        f"ONNX Runtime {ort.__version__} ({', '.join(installed) or 'unknown package'}), "
        f"providers available: {ort.get_available_providers()}"
    )
    if len(installed) > 1:
        line += "; WARNING: both packages install the same module, uninstall one of them"
    return line


_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_MODES = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}
_TENSORRT = "TensorrtExecutionProvider"
# TensorRT options naming a cache file or folder, beside the flag that turns each on.
_TENSORRT_CACHES = (
    ("trt_engine_cache_enable", "trt_engine_cache_path", "engines"),
    ("trt_timing_cache_enable", "trt_timing_cache_path", "timing"),
)
DEFAULT_CACHE = Path.home() / ".cache" / "onnx-serving"


class OnnxSession:
    """A session on the configured providers, or a load error saying which one is missing.

    ONNX Runtime quietly runs on the CPU when a requested provider is missing; here that
    fails the load (naming the provider and why) unless the config allows a fallback.
    """

    def __init__(self, path: Path, graph: Graph, config: RuntimeConfig) -> None:
        providers = self._available(config, path.name)
        self.threads = choose(config)
        options = _session_options(config, self.threads)
        if graph.extension_domains:
            extensions.register(options, path.name, graph.extension_domains)
        # Runs beyond the instances wait here rather than oversubscribe the cores.
        self._slots = Slots(self.threads.instances)
        model = path
        cached: Path | None = None
        if config.cache_dir and [p.name for p in providers] == [CPU]:
            level = config.graph_optimization_level
            cached = Path(config.cache_dir) / f"{_digest(path)}-{level}.onnx"
            if cached.is_file():  # already optimized: load it as it is
                model, cached = cached, None
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            else:
                cached.parent.mkdir(parents=True, exist_ok=True)
                options.optimized_model_filepath = str(cached.with_suffix(".partial"))
        try:
            self._session = ort.InferenceSession(
                str(model), options,
                providers=[p.name for p in providers],
                provider_options=[_provider_options(p, path, config) for p in providers],
            )
        except ORT_ERRORS as exc:
            raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {exc}") from exc
        if cached is not None:  # written whole by now: publish it for the next load
            cached.with_suffix(".partial").rename(cached)
        self.providers: list[str] = self._session.get_providers()
        failed = [p.name for p in providers if p.name not in self.providers]
        if failed and not config.allow_fallback:
            raise ModelLoadError(
                f"execution provider {failed[0]} for {path.name} could not be initialized "
                "(no device, or a library it needs is missing: ONNX Runtime's log above says "
                f"which); running on {self.providers} instead is refused. Set "
                '"allow_fallback": true in runtime.json to accept it'
            )
        if failed:
            log.warning("%s: %s unavailable; running on %s (allow_fallback)",
                        path.name, failed, self.providers)
        self._raw_outputs = {n: dt for n, (dt, _) in graph.outputs.items() if dt in RAW_BITS}
        host_dtypes = {
            n: dt for n, (dt, _) in graph.outputs.items() if dt not in RAW_BITS and dt.kind != "O"
        }
        self._converts_inputs = any(
            dt in RAW_BITS or dt.kind == "O" for dt, _ in graph.inputs.values()
        )
        self._decodings = graph.decodings
        # ONNX Runtime binds neither text nor an initializer given a value of its own.
        self._bindable = {i.name for i in self._session.get_inputs()} - {
            n for n, (dt, _) in graph.inputs.items() if dt.kind == "O"
        }
        # run_with_iobinding raises a bare RuntimeError for what run() raises as Fail.
        self._bound = BoundRunner(
            self._session, host_dtypes, (*ORT_ERRORS, RuntimeError), _run_error,
            self._from_ort_value, self._slots,
        ) if config.io_binding else None

    @staticmethod
    def _available(config: RuntimeConfig, model: str) -> list[Provider]:
        """The requested providers this build has; a missing one is an error unless allowed."""
        built = ort.get_available_providers()
        missing = [p.name for p in config.providers if p.name not in built]
        if missing and not config.allow_fallback:
            raise ModelLoadError(
                f"execution provider {missing[0]} for {model} is not in this ONNX Runtime build "
                f"({ort.__version__}: {built}); install the package that has it (onnxruntime-gpu "
                'for CUDA and TensorRT), or set "allow_fallback": true in runtime.json'
            )
        if missing:
            log.warning("%s: %s not in this ONNX Runtime build; skipped (allow_fallback)",
                        model, missing)
        kept = [p for p in config.providers if p.name in built]
        return kept or [Provider(CPU)]

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str],
        deadline: Deadline | None = None,
    ) -> list[np.ndarray]:
        """Outputs the caller owns (a batch's, split among its requests later). A
        ``deadline`` passed while waiting for a slot skips the run; its caller leaving
        stops it."""
        ort_feeds = self._ort_feeds(feeds)
        try:
            with self._slots, run_options(deadline) as options:
                if self._raw_outputs and not self._raw_outputs.keys().isdisjoint(outputs):
                    values = self._session.run_with_ort_values(list(outputs), ort_feeds, options)
                else:
                    return self._session.run(list(outputs), ort_feeds, options)
            return [self._from_ort_value(n, v) for n, v in zip(outputs, values, strict=True)]
        except ORT_ERRORS as exc:
            raise _run_error(exc) from exc

    def lease(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], keys: Sequence[str],
        deadline: Deadline | None = None,
    ) -> AbstractContextManager[dict[str, np.ndarray]]:
        """Runs on entering; the outputs, by ``keys``, are valid inside the block only.

        With IO binding they are buffers that the next request reuses: encode them (or
        copy) before the block ends.
        """
        if self._bound is not None and feeds.keys() <= self._bindable:
            return self._bound.lease(self._ort_feeds(feeds), outputs, keys, deadline)
        return nullcontext(dict(zip(keys, self.run(feeds, outputs, deadline), strict=True)))

    def _ort_feeds(self, feeds: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
        """Text and images decoded, raw-bit types wrapped: only graphs with such inputs pay."""
        if not self._converts_inputs:
            return feeds
        return {
            name: self._decodings[name].decode(name, array) if name in self._decodings
            else _to_ort(name, array)
            for name, array in feeds.items()
        }

    def _from_ort_value(self, name: str, value: ort.OrtValue) -> np.ndarray:
        dtype = self._raw_outputs.get(name)
        if dtype is None:
            return value.numpy()
        size = value.tensor_size_in_bytes()
        raw = bytes((ctypes.c_uint8 * size).from_address(value.data_ptr())) if size else b""
        return np.frombuffer(raw, dtype=dtype).reshape(value.shape())


def _run_error(exc: Exception) -> ServingError:
    """A failed run's status: the input's fault unless memory ran out or the caller left."""
    message = f"ONNX Runtime: {exc}"
    if "Failed to allocate memory" in message or "bad_alloc" in message:
        return ResourceExhausted(message)
    if "terminate flag" in message:  # RunOptions.terminate: Deadline.leave stopped it
        return Cancelled("The request's caller went away; its run was stopped")
    return InvalidArgument(message)


def _to_ort(name: str, array: np.ndarray) -> np.ndarray | ort.OrtValue:
    if array.dtype == object:
        return _decode_text(name, array)
    raw = RAW_BITS.get(array.dtype)
    if raw is None:
        return array
    bits = np.ascontiguousarray(array).view(raw)
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, ONNX_BY_NUMPY[array.dtype])


def _decode_text(name: str, array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    text = np.empty(flat.shape, dtype=object)
    for i, value in enumerate(flat):
        try:
            text[i] = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError as exc:
            raise InvalidArgument(
                f"string element {i} of '{name}' is not valid UTF-8 ({exc.reason} at byte "
                f"{exc.start}); ONNX Runtime carries strings as text, so only UTF-8 is accepted"
            ) from None
    return text.reshape(array.shape)


def _session_options(config: RuntimeConfig, threads: Threads) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[config.graph_optimization_level]
    if threads.global_pools:
        start_global_pools(threads)  # a no-op after the first session
        options.use_per_session_threads = False
    else:
        options.intra_op_num_threads = threads.intra_op_threads
        options.inter_op_num_threads = threads.inter_op_threads
    options.add_session_config_entry(SPINNING, "1" if threads.spinning else "0")
    options.execution_mode = _MODES[config.execution_mode]
    options.enable_cpu_mem_arena = config.enable_mem_arena
    options.enable_mem_pattern = config.enable_mem_pattern
    for key, value in config.session_config.items():
        options.add_session_config_entry(key, value)
    return options


def _provider_options(provider: Provider, model: Path, config: RuntimeConfig) -> dict[str, Any]:
    """The provider's options as given; TensorRT caches without a path get a fixed one.

    TensorRT engine builds take minutes. Its caches are kept under the cache folder,
    named by the model file's content, so restarts and reloads of the same model find
    them, and a changed model never picks up a stale engine.
    """
    options = dict(provider.options)
    if provider.name == CUDA:
        options = with_memory_limit(options, config.gpu_memory_fraction)
    if provider.name == _TENSORRT:
        root = Path(config.cache_dir) if config.cache_dir else DEFAULT_CACHE
        for enable, path_key, folder in _TENSORRT_CACHES:
            if _truthy(options.get(enable)) and not options.get(path_key):
                cache = root / "tensorrt" / folder / _digest(model)
                cache.mkdir(parents=True, exist_ok=True)
                options[path_key] = str(cache)
    return {k: str(v) if isinstance(v, bool | int | float) else v for k, v in options.items()}


def _truthy(value: object) -> bool:
    return str(value).lower() in ("1", "true")


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()[:24]
