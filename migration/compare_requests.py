"""What `onnx-serving compare` sends, and the two sides that answer.

Requests come from a warmup or PredictionLog TFRecord (replayed as logged, byte for
byte), an ``.npz`` of inputs by alias, or are generated from the signature's metadata.
A side is a TF Serving-API endpoint reached through the public gRPC API only, so TF
Serving itself can be either side, or a SavedModel run by TensorFlow in this process
for teams that cannot run TF Serving beside onnx-serving.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np

from onnx_serving.client import Client, ServingError, SignatureDef
from onnx_serving.codec.prediction_log import PredictionLogError, read_prediction_logs
from onnx_serving.codec.tensors import (
    TensorCodecError,
    TensorProto,
    make_ndarray,
    make_tensor_proto,
    numpy_dtype,
)

SIDES = ("baseline", "candidate")

# tensorflow.error.Code and grpc.StatusCode share their numbers.
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
_LETTERS = np.array(list(string.ascii_lowercase))


class RequestError(ValueError):
    """Requests that cannot be read or made, with the reason."""


class SideError(Exception):
    """A request or metadata call one side refused; ``code`` is a gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class InputSpec:
    """An input as a signature declares it; ``shape`` is None for unknown rank."""

    dtype: np.dtype
    shape: tuple[int | None, ...] | None


@dataclass
class Request:
    """One request's inputs, decoded for TensorFlow and encoded once for the wire.

    Encoding ahead of the latency phase keeps the client's own work small and
    the same for both sides; logged requests keep their original TensorProtos.
    """

    inputs: dict[str, np.ndarray]
    protos: dict[str, TensorProto] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.protos:
            self.protos = {alias: make_tensor_proto(v) for alias, v in self.inputs.items()}


@dataclass(frozen=True)
class RequestSet:
    source: str  # "generated" or the file read
    requests: list[Request]
    notes: list[str]


# --- where requests come from ----------------------------------------------------------


def read_requests(
    path: Path, specs: Mapping[str, InputSpec] | None, limit: int | None
) -> RequestSet:
    """``.npz`` by suffix; anything else is read as a TFRecord of PredictionLog."""
    notes: list[str] = []
    if path.suffix == ".npz":
        requests = _from_npz(path, specs or {})
    else:
        requests, notes = _from_prediction_log(path)
    if not requests:
        raise RequestError(f"{path} holds no predict requests")
    if limit is not None and len(requests) > limit:
        notes.append(f"used the first {limit} of {len(requests)} requests")
        requests = requests[:limit]
    return RequestSet(str(path), requests, notes)


def _from_prediction_log(path: Path) -> tuple[list[Request], list[str]]:
    requests: list[Request] = []
    skipped: Counter[str] = Counter()
    try:
        for index, log in enumerate(read_prediction_logs(path)):
            kind = log.WhichOneof("log_type")
            if kind != "predict_log":
                skipped[str(kind)] += 1
                continue
            protos = dict(log.predict_log.request.inputs)
            try:
                inputs = {alias: make_ndarray(proto) for alias, proto in protos.items()}
            except TensorCodecError as exc:
                raise RequestError(f"{path}: record {index}: {exc}") from exc
            requests.append(Request(inputs, protos))
    except PredictionLogError as exc:
        raise RequestError(str(exc)) from exc
    notes = [f"skipped {n} {kind} record(s): only Predict is compared"
             for kind, n in skipped.items()]
    return requests, notes


def _from_npz(path: Path, specs: Mapping[str, InputSpec]) -> list[Request]:
    """One request, or one per leading index where every array has one more dim than its input.

    The signature's ranks decide, so ``x`` of shape [8, 1] for an input [-1, 1] is one
    batch of 8, and [3, 8, 1] is three requests.
    """
    with np.load(path, allow_pickle=False) as archive:
        arrays = {alias: archive[alias] for alias in archive.files}
    if not arrays:
        raise RequestError(f"{path} holds no arrays")
    stacked = {
        alias: _is_stacked(array, specs.get(alias)) for alias, array in arrays.items()
    }
    if not any(stacked.values()):
        return [Request(arrays)]
    if not all(stacked.values()) or len({a.shape[0] for a in arrays.values()}) != 1:
        shapes = {alias: list(array.shape) for alias, array in arrays.items()}
        raise RequestError(
            f"{path}: arrays {shapes} must all be single requests or all stack the same "
            "number of requests on a leading axis (one more dimension than the signature's)"
        )
    count = next(iter(arrays.values())).shape[0]
    return [Request({alias: array[i] for alias, array in arrays.items()}) for i in range(count)]


def _is_stacked(array: np.ndarray, spec: InputSpec | None) -> bool:
    return spec is not None and spec.shape is not None and array.ndim == len(spec.shape) + 1


def generate_requests(
    specs: Mapping[str, InputSpec], count: int, batch_size: int, seed: int
) -> RequestSet:
    """Random inputs shaped from metadata: unknown first dims are ``batch_size``, others 1.

    Floats are standard normal, integers small (0..9, valid as indices or ids), strings
    short lowercase words; seeded, so two runs send the same requests.
    """
    if not specs:
        raise RequestError("the signature has no inputs to generate")
    rng = np.random.default_rng(seed)
    requests = [
        Request({alias: _random(specs[alias], batch_size, rng) for alias in sorted(specs)})
        for _ in range(count)
    ]
    return RequestSet("generated", requests, [])


def _random(spec: InputSpec, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    if spec.shape is None:
        shape: tuple[int, ...] = (batch_size,)
    else:
        shape = tuple(
            (batch_size if i == 0 else 1) if d is None else d for i, d in enumerate(spec.shape)
        )
    dtype = spec.dtype
    if dtype == np.object_:
        lengths = rng.integers(3, 9, size=shape)
        words = np.empty(shape, dtype=object)
        for index, length in np.ndenumerate(lengths):
            words[index] = "".join(rng.choice(_LETTERS, size=int(length))).encode()
        return words
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)  # floats, ml_dtypes' included


# --- who answers ------------------------------------------------------------------------


class Side(Protocol):
    """One side of the comparison; each method raises :class:`SideError` when refused."""

    def describe(self) -> dict[str, Any]: ...

    def input_specs(self) -> dict[str, InputSpec]: ...

    def predict(self, request: Request) -> dict[str, np.ndarray]: ...

    def send(self, request: Request) -> None:
        """As :meth:`predict`, with outputs left undecoded: what the latency phase times."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    address: str
    model: str
    signature: str
    version: int | None = None
    label: str | None = None


class GrpcSide:
    """A TF Serving-API endpoint, through the public PredictionService only."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self._timeout = timeout
        self._client = Client(target.address)
        # Which versions answered: a label or "latest" resolves on the server.
        self._versions: set[int] = set()

    def describe(self) -> dict[str, Any]:
        t = self.target
        return {
            "kind": "grpc",
            "address": t.address,
            "model_name": t.model,
            "version": t.version,
            "label": t.label,
            "signature_name": t.signature,
            "versions_answered": sorted(self._versions),
        }

    def input_specs(self) -> dict[str, InputSpec]:
        t = self.target
        try:
            signatures = self._client.metadata(
                t.model, version=t.version, label=t.label, timeout=self._timeout
            )
        except ServingError as exc:
            raise SideError(exc.code.name, f"{t.address}: {exc.message}") from exc
        signature = signatures.get(t.signature)
        if signature is None:
            raise SideError(
                "NOT_FOUND",
                f"{t.address}: model {t.model!r} has no signature {t.signature!r}; "
                f"it has {sorted(signatures)}",
            )
        return _specs_of(signature)

    def predict(self, request: Request) -> dict[str, np.ndarray]:
        response = self._call(request)
        outputs = {}
        for alias, proto in response.outputs.items():
            try:
                outputs[alias] = make_ndarray(proto)
            except TensorCodecError as exc:
                raise SideError("DATA_LOSS", f"output {alias!r} cannot be decoded: {exc}") from exc
        return outputs

    def send(self, request: Request) -> None:
        self._call(request)

    def _call(self, request: Request) -> Any:
        t = self.target
        try:
            response = self._client.predict_response(
                t.model,
                request.protos,
                version=t.version,
                label=t.label,
                signature=t.signature,
                timeout=self._timeout,
            )
        except ServingError as exc:
            raise SideError(exc.code.name, exc.message) from exc
        self._versions.add(response.model_spec.version.value)
        return response

    def close(self) -> None:
        self._client.close()


def _specs_of(signature: SignatureDef) -> dict[str, InputSpec]:
    specs = {}
    for alias, info in signature.inputs.items():
        try:
            dtype = numpy_dtype(info.dtype)
        except TensorCodecError as exc:
            raise SideError("UNIMPLEMENTED", f"input {alias!r}: {exc}") from exc
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(d.size if d.size >= 0 else None
                                                     for d in shape.dim)
        specs[alias] = InputSpec(dtype, dims)
    return specs


class SavedModelSide:
    """A SavedModel's signature run by TensorFlow in this process: TF Serving's result
    without TF Serving. Its latency has no RPC in it, which the report says.
    """

    def __init__(self, path: Path, signature: str) -> None:
        import tensorflow as tf  # only this mode pays for importing TensorFlow

        self._tf = tf
        self.path = _saved_model_dir(path)
        self.signature = signature
        self._loaded = tf.saved_model.load(str(self.path))  # owns the variables
        function = self._loaded.signatures.get(signature)
        if function is None:
            raise SideError(
                "NOT_FOUND",
                f"{self.path} has no signature {signature!r}; "
                f"it has {sorted(self._loaded.signatures)}",
            )
        self._function = function

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "saved_model",
            "path": str(self.path),
            "signature_name": self.signature,
            "tensorflow": self._tf.__version__,
        }

    def input_specs(self) -> dict[str, InputSpec]:
        _, named = self._function.structured_input_signature
        return {
            alias: InputSpec(
                np.dtype(spec.dtype.as_numpy_dtype),
                None if spec.shape.rank is None else tuple(spec.shape.as_list()),
            )
            for alias, spec in named.items()
        }

    def predict(self, request: Request) -> dict[str, np.ndarray]:
        return {alias: tensor.numpy() for alias, tensor in self._run(request).items()}

    def send(self, request: Request) -> None:
        self._run(request)

    def _run(self, request: Request) -> dict[str, Any]:
        tf = self._tf
        try:
            tensors = {alias: tf.constant(value) for alias, value in request.inputs.items()}
            return dict(self._function(**tensors))
        except tf.errors.OpError as exc:
            raise SideError(_CODE_NAMES.get(exc.error_code, "UNKNOWN"), exc.message) from exc
        except (TypeError, ValueError) as exc:
            # How a concrete function refuses missing, extra or unconvertible inputs.
            raise SideError("INVALID_ARGUMENT", str(exc)) from exc

    def close(self) -> None:
        """Nothing to release: the SavedModel goes with the process."""


def _saved_model_dir(path: Path) -> Path:
    """A SavedModel directory, or TF Serving's base path: its highest numbered version."""
    if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
        return path
    versions = sorted(
        (int(child.name), child)
        for child in path.iterdir()
        if child.is_dir() and child.name.isdigit() and (child / "saved_model.pb").exists()
    ) if path.is_dir() else []
    if not versions:
        raise SideError(
            "NOT_FOUND", f"{path} is not a SavedModel nor a base path of numbered versions"
        )
    return versions[-1][1]
