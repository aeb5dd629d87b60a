"""One ONNX Runtime session per model file, and the quirks of its Python API.

ONNX Runtime's Python API carries text as ``str`` (a ``bytes`` element turns
into its repr), and has no numpy type for bfloat16 or the float8 types.
Requests carry DT_STRING as bytes: they are decoded as UTF-8 here, and an
element that is not valid UTF-8 is refused rather than changed. The
ml_dtypes types travel as OrtValues built from their raw bits.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnx_serving.server.errors import InvalidArgument, ModelLoadError
from onnx_serving.server.runtime.dtypes import ONNX_BY_NUMPY, RAW_BITS
from onnx_serving.server.runtime.graph import Graph

_ORT_ERRORS = (
    ort.capi.onnxruntime_pybind11_state.Fail,
    ort.capi.onnxruntime_pybind11_state.InvalidArgument,
    ort.capi.onnxruntime_pybind11_state.RuntimeException,
    ort.capi.onnxruntime_pybind11_state.InvalidGraph,
    ort.capi.onnxruntime_pybind11_state.NoSuchFile,
    ort.capi.onnxruntime_pybind11_state.NotImplemented,
    ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
)


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


@dataclass(frozen=True)
class SessionOptions:
    """Per-session settings; 0 threads lets ONNX Runtime choose."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0


class OnnxSession:
    def __init__(self, path: Path, graph: Graph, options: SessionOptions) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = options.inter_op_threads
        try:
            self._session = ort.InferenceSession(
                str(path), so, providers=["CPUExecutionProvider"]
            )
        except _ORT_ERRORS as exc:
            raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {exc}") from exc
        self.providers: list[str] = self._session.get_providers()
        self._raw_outputs = {n: dt for n, (dt, _) in graph.outputs.items() if dt in RAW_BITS}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        ort_feeds = {name: _to_ort(name, array) for name, array in feeds.items()}
        try:
            if self._raw_outputs.keys() & set(outputs):
                values = self._session.run_with_ort_values(list(outputs), ort_feeds)
                return [self._from_ort_value(n, v) for n, v in zip(outputs, values, strict=True)]
            return self._session.run(list(outputs), ort_feeds)
        except _ORT_ERRORS as exc:
            raise InvalidArgument(f"ONNX Runtime: {exc}") from exc

    def _from_ort_value(self, name: str, value: ort.OrtValue) -> np.ndarray:
        dtype = self._raw_outputs.get(name)
        if dtype is None:
            return value.numpy()
        size = value.tensor_size_in_bytes()
        raw = bytes((ctypes.c_uint8 * size).from_address(value.data_ptr())) if size else b""
        return np.frombuffer(raw, dtype=dtype).reshape(value.shape())


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


