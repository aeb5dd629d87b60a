"""The Open Inference Protocol's requests on the one ServingCore, whatever the transport.

gRPC (``grpc_service.py``) and REST (``rest.py``) turn their messages into
``InferInput``s and their answers out of ``InferOutput``s; everything else is
here, once: how a version string names a version or a label, that a model's
tensors are its default signature's inputs and outputs, the datatype checks, and
the model's metadata and readiness. The request itself is the core's Predict, so
versions, batching, metrics, the request log and errors are TF Serving's API's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as package_metadata
from typing import Final, TypeVar

import numpy as np

from onnx_serving.codec.dtypes import oip_name, oip_numpy
from onnx_serving.codec.served_model import DEFAULT_SIGNATURE
from onnx_serving.server.errors import InvalidArgument, ServingError, Unimplemented
from onnx_serving.server.repository.transitions import State
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.runtime.model import Outputs
from onnx_serving.server.runtime.signature import Signature, TensorSpec
from onnx_serving.server.serving.core import ModelRef, ServingCore
from onnx_serving.server.serving.predict import Served

T = TypeVar("T")

SERVER_NAME: Final = "onnx-serving"
# Triton's name for the binary data extension, which REST speaks (docs/open-inference.md).
EXTENSIONS: Final = ("binary_tensor_data",)
# The platform names OIP allows ("<project>_<format>"); ours runs ONNX files on ORT.
PLATFORM: Final = "onnxruntime_onnx"


def server_version() -> str:
    try:
        return package_metadata.version(SERVER_NAME)
    except package_metadata.PackageNotFoundError:  # run from a checkout
        return "0+unknown"


def model_ref(name: str, version: str) -> ModelRef:
    """OIP names a version by a string: empty is the highest available one (TF Serving's
    "latest"), digits are a version number, anything else is a version label."""
    if not name:
        raise InvalidArgument("The request names no model")
    if not version:
        return ModelRef(name)
    if version.isascii() and version.isdigit():
        if len(version.lstrip("0")) > 19 or int(version) > 2**63 - 1:
            raise InvalidArgument(f"Model version {version} is out of range")
        return ModelRef(name, version=int(version))
    return ModelRef(name, label=version)


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]  # -1 for a dimension of any size; [-1] for a tensor of any rank


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]  # every available version, highest first
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class InputData:
    """One input's data, decoded once the model's datatype for it is known."""

    def __init__(self, name: str, datatype: str, shape: Sequence[int],
                 decode: Callable[[np.dtype], np.ndarray]) -> None:
        self.name, self.datatype, self.shape = name, datatype, list(shape)
        self._decode = decode

    def decode(self, dtype: np.dtype) -> np.ndarray:
        return self._decode(dtype)


@dataclass(frozen=True)
class InferOutput:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray  # valid only while the answer is encoded (IO binding reuses it)


# How a transport builds its answer: what answered, the outputs in the order asked.
Encode = Callable[[Served, list[InferOutput]], T]


class Inference:
    """OIP's data plane (MLServer's DataPlane) over ``ServingCore``."""

    def __init__(self, core: ServingCore, readiness: Callable[[], str | None]) -> None:
        """``readiness``: why the server should get no traffic now, None when ready."""
        self._core = core
        self._readiness = readiness

    def server_ready(self) -> bool:
        return self._readiness() is None

    def model_ready(self, name: str, version: str) -> bool:
        """Whether the version named (by number, label or none) answers now."""
        try:
            with self._core.pin(model_ref(name, version)):
                return True
        except ServingError:
            return False

    def model_metadata(self, name: str, version: str) -> ModelMetadata:
        served = self._core.metadata(model_ref(name, version))
        signature = _default(served.signatures)
        available = [
            str(s.version) for s in self._core.status(name) if s.state == State.AVAILABLE
        ]
        return ModelMetadata(
            served.name, available, PLATFORM,
            [_tensor_metadata(spec) for spec in signature.inputs.values()],
            [_tensor_metadata(spec) for spec in signature.outputs.values()],
        )

    def infer(
        self,
        name: str,
        version: str,
        inputs: Sequence[InputData],
        outputs: Sequence[str],
        encode: Encode[T],
        *,
        entrypoint: str,
        deadline: Deadline | None = None,
    ) -> T:
        """The default signature run on ``inputs``; ``outputs`` names those to answer (all
        when empty). ``encode`` runs while the outputs are valid."""
        by_name: dict[str, InputData] = {}
        for given in inputs:
            if given.name in by_name:
                raise InvalidArgument(f"input '{given.name}' is given more than once")
            by_name[given.name] = given

        def decode(signature: Signature) -> Mapping[str, np.ndarray]:
            return _Inputs(by_name, signature)

        def encode_outputs(served: Served, arrays: Outputs) -> T:
            return encode(served, [_output(alias, array) for alias, array in arrays.items()])

        return self._core.predict(
            model_ref(name, version), DEFAULT_SIGNATURE, decode, encode_outputs,
            entrypoint=entrypoint, output_filter=list(outputs), deadline=deadline,
        )


class _Inputs(Mapping[str, np.ndarray]):
    """The request's tensors by name, each checked and decoded when the core reads it (after
    it has checked the names against the signature)."""

    def __init__(self, given: Mapping[str, InputData], signature: Signature) -> None:
        self._given = given
        self._signature = signature

    def __getitem__(self, name: str) -> np.ndarray:
        given = self._given[name]
        spec = self._signature.inputs[name]
        expected = oip_name(spec.dtype)
        if oip_numpy(given.datatype) is None:
            raise InvalidArgument(f"input '{name}' has unknown datatype {given.datatype!r}")
        if given.datatype != expected:
            raise InvalidArgument(
                f"input '{name}' has datatype {given.datatype}, but the model expects "
                f"{expected}"
            )
        return given.decode(spec.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)


def _default(signatures: Mapping[str, Signature]) -> Signature:
    signature = signatures.get(DEFAULT_SIGNATURE)
    if signature is None:
        raise Unimplemented(
            f"The model has no {DEFAULT_SIGNATURE} signature, which the Open Inference "
            "Protocol serves"
        )
    return signature


def _tensor_metadata(spec: TensorSpec) -> TensorMetadata:
    shape = spec.declared_shape
    return TensorMetadata(
        spec.alias, oip_name(spec.dtype) or spec.dtype.name,
        [-1] if shape is None else [-1 if d is None else d for d in shape],
    )


def _output(name: str, array: np.ndarray) -> InferOutput:
    datatype = oip_name(array.dtype)
    if datatype is None:
        raise Unimplemented(
            f"output '{name}' is {array.dtype.name}, a type the Open Inference Protocol "
            "has no datatype for"
        )
    return InferOutput(name, datatype, list(array.shape), array)
