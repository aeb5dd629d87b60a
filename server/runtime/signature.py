"""Signatures: the names TF Serving clients use, mapped onto ONNX graph tensors.

A TF Serving client addresses a signature (``serving_default`` unless it
says otherwise) and that signature's input and output aliases; an ONNX file
knows only its graph's tensor names. A version directory may hold a
``signatures.json`` (see docs/signatures.md) that maps one onto the other.
Without one, ``serving_default`` exposes ``model.onnx``'s own names.

The request checks here reproduce TF Serving's (predict_util.cc and
TensorFlow's saved_model/util.cc), messages included, and add what TF
Serving leaves to the runtime: dtype and shape are checked against what the
graph can take before ONNX Runtime runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from onnx_serving.codec.dtypes import NUMPY_BY_TF_NAME, tf_name
from onnx_serving.codec.served_model import (
    DEFAULT_MODEL_FILE,
    DEFAULT_SIGNATURE,
    signature_key,
)
from onnx_serving.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelLoadError,
    ServingError,
)
from onnx_serving.server.runtime.example_parse import ExampleParse, read_parse_spec
from onnx_serving.server.runtime.graph import Graph, Shape

PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass(frozen=True)
class TensorSpec:
    alias: str
    name: str  # the ONNX graph's tensor name
    dtype: np.dtype
    shape: Shape  # what the graph accepts; checked on every request
    declared_shape: Shape  # what metadata shows (the signature file may narrow it)


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    model_file: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    # Set when one input carries serialized tf.Examples that the server parses (example_parse.py).
    parse: ExampleParse | None = None

    def feeds(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph tensor → value: the parse stage's outputs stand for the examples input."""
        if self.parse is None:
            return {self.inputs[alias].name: array for alias, array in inputs.items()}
        feeds = self.parse.parse(inputs[self.parse.input])
        for alias, array in inputs.items():
            if alias != self.parse.input:
                feeds[self.inputs[alias].name] = array
        return feeds

    def check_input_keys(self, keys: Collection[str]) -> None:
        """TF Serving's checks, in its order and words."""
        if len(keys) == len(self.inputs) and all(k in self.inputs for k in keys):
            return
        sent, expected = set(keys), set(self.inputs)
        if len(sent) != len(expected):
            raise InvalidArgument(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{_join(sent)}}}) != len({{{_join(expected)}}}). "
                f"Sent extra: {{{_join(sent - expected)}}}. "
                f"Missing but required: {{{_join(expected - sent)}}}."
            )
        for alias in sorted(expected - sent):
            raise InvalidArgument(
                f"Signature input alias: {alias}(feed name: {self.inputs[alias].name}) not found "
                f"in request and no default value provided. Inputs expected to be in the "
                f"request {{{_join(sent)}}}, or default input alias set: "
            )

    @cached_property
    def every_output(self) -> tuple[list[str], list[str]]:
        """Graph names and aliases of every output, in order: what a request without an
        output filter asks for, found once."""
        return ([spec.name for spec in self.outputs.values()],
                [spec.alias for spec in self.outputs.values()])

    def selected_outputs(self, output_filter: Sequence[str]) -> tuple[list[str], list[str]]:
        """Graph names and aliases of the outputs ``output_filter`` asks for (all when
        empty), checked as TF Serving checks them. The lists may be shared: read only."""
        if not output_filter:
            return self.every_output
        selected = self._filtered_outputs(output_filter)
        return [spec.name for spec in selected], [spec.alias for spec in selected]

    def _filtered_outputs(self, output_filter: Sequence[str]) -> list[TensorSpec]:
        selected: list[TensorSpec] = []
        seen: set[str] = set()
        for alias in output_filter:
            spec = self.outputs.get(alias)
            if spec is None:
                raise InvalidArgument(
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{_join(self.outputs)}}}."
                )
            if alias in seen:
                raise InvalidArgument(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
            selected.append(spec)
        return selected

    def check_input(self, alias: str, array: np.ndarray) -> None:
        spec = self.inputs[alias]
        got_dtype = np.dtype(object) if array.dtype.kind in "OSU" else array.dtype
        if got_dtype != spec.dtype or not _fits(array.shape, spec.shape):
            raise InvalidArgument(
                f"input '{alias}' expects {tf_name(spec.dtype)} with shape "
                f"{format_shape(spec.shape)}, got {tf_name(array.dtype)} with shape "
                f"{format_shape(array.shape)}"
            )


def _join(names: Collection[str]) -> str:
    return ",".join(sorted(names))


def _fits(shape: tuple[int, ...], accepted: Shape) -> bool:
    if accepted is None:
        return True
    return len(shape) == len(accepted) and all(
        want is None or want == got for got, want in zip(shape, accepted, strict=True)
    )


def format_shape(shape: Shape | tuple[int, ...]) -> str:
    if shape is None:
        return "<unknown rank>"
    return "[" + ",".join("-1" if d is None else str(d) for d in shape) + "]"


def lookup_signature(
    signatures: Mapping[str, Signature], requested: str, missing: Callable[[str], ServingError]
) -> Signature:
    """The signature a request names (the default one when it names none). TF Serving
    words a missing one differently in each API: ``missing(key)`` is that API's error."""
    key = signature_key(requested)
    signature = signatures.get(key)
    if signature is None:
        raise missing(key)
    return signature


def find_signature(signatures: Mapping[str, Signature], name: str) -> Signature:
    """Predict's lookup (TF Serving's predict_util.cc)."""
    return lookup_signature(
        signatures, name,
        lambda key: FailedPrecondition(f'Serving signature key "{key}" not found.'),
    )


def default_signatures(graph: Graph) -> dict[str, Signature]:
    """``serving_default`` over every graph input and output, by their own names."""

    def specs(tensors: Mapping[str, tuple[np.dtype, Shape]]) -> dict[str, TensorSpec]:
        return {n: TensorSpec(n, n, dt, shape, shape) for n, (dt, shape) in tensors.items()}

    signature = Signature(
        DEFAULT_SIGNATURE, PREDICT_METHOD, DEFAULT_MODEL_FILE,
        specs(graph.required_inputs), specs(graph.outputs),
    )
    return {DEFAULT_SIGNATURE: signature}


# signatures.json's one key: signature name -> its entry (docs/signatures.md).
_SIGNATURE_DEF = "signature_def"


def read_signature_file(path: Path) -> dict[str, dict[str, Any]]:
    """The raw signature entries of ``signatures.json``, keyed by signature name."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    entries = document.get(_SIGNATURE_DEF) if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise ModelLoadError(f'{path} must hold a non-empty "{_SIGNATURE_DEF}" object')
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise ModelLoadError(f"{path}: signature '{name}' must be an object")
    return entries


def write_signature_file(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> None:
    """Writes ``signatures.json`` as ``read_signature_file`` reads it (``onnx-serving
    convert`` does, for each version it converts)."""
    path.write_text(json.dumps({_SIGNATURE_DEF: entries}, indent=2))


def build_signature(
    name: str, entry: Mapping[str, Any], graph: Graph, source: Path
) -> Signature:
    """Checks one signature-file entry against its ONNX graph."""
    where = f"{source}: signature '{name}'"
    model_file = entry.get("model_file", DEFAULT_MODEL_FILE)
    parse = read_parse_spec(entry["parse_example"], where) if "parse_example" in entry else None
    raw_inputs = entry.get("inputs")
    examples: dict[str, TensorSpec] = {}
    if parse is not None and isinstance(raw_inputs, Mapping):
        examples = _examples_input(raw_inputs, parse, graph, where)
        raw_inputs = {a: i for a, i in raw_inputs.items() if a != parse.input}
    inputs = _tensor_specs(raw_inputs, graph.inputs, f"{where} input", graph.file)
    inputs.update(examples)
    outputs = _tensor_specs(entry.get("outputs"), graph.outputs, f"{where} output", graph.file)
    if not outputs:
        raise ModelLoadError(f"{where} has no outputs")
    fed = {spec.name for alias, spec in inputs.items() if alias not in examples}
    unfed = set(graph.required_inputs) - fed - (parse.graph_inputs if parse else set())
    if unfed:
        raise ModelLoadError(
            f"{where} leaves graph inputs {sorted(unfed)} of {graph.file} without an alias"
        )
    method = entry.get("method_name", PREDICT_METHOD)
    return Signature(name, str(method), str(model_file), inputs, outputs, parse)


def _examples_input(
    raw: Mapping[str, Any], parse: ExampleParse, graph: Graph, where: str
) -> dict[str, TensorSpec]:
    """The input the parse stage reads: a vector of serialized tf.Example, not a graph tensor."""
    info = raw.get(parse.input)
    if not isinstance(info, Mapping):
        raise ModelLoadError(f'{where}: "parse_example" reads input "{parse.input}", '
                             "which the signature does not have")
    missing = parse.graph_inputs - set(graph.inputs)
    if missing:
        raise ModelLoadError(f'{where}: "parse_example" feeds {sorted(missing)}, which '
                             f"{graph.file} does not have")
    if info.get("dtype", "DT_STRING") != "DT_STRING":
        raise ModelLoadError(f'{where}: "parse_example" input "{parse.input}" must be DT_STRING')
    vector: Shape = (None,)
    declared = _declared_shape(info, vector, f'{where} input "{parse.input}"')
    name = str(info.get("name", parse.input))
    return {parse.input: TensorSpec(parse.input, name, np.dtype(object), vector, declared)}


def _tensor_specs(
    raw: Any, graph_tensors: Mapping[str, tuple[np.dtype, Shape]], where: str, file: str
) -> dict[str, TensorSpec]:
    if not isinstance(raw, Mapping):
        raise ModelLoadError(f"{where}s must be an object of alias → tensor")
    specs: dict[str, TensorSpec] = {}
    for alias, info in raw.items():
        if not isinstance(info, Mapping) or not isinstance(info.get("name"), str):
            raise ModelLoadError(f'{where} "{alias}" needs a "name" (an ONNX tensor of {file})')
        tensor = info["name"]
        if tensor not in graph_tensors:
            raise ModelLoadError(
                f'{where} "{alias}" names "{tensor}", which {file} does not have; '
                f"it has {sorted(graph_tensors)}"
            )
        dtype, shape = graph_tensors[tensor]
        declared = info.get("dtype")
        if declared is not None and NUMPY_BY_TF_NAME.get(declared) != dtype:
            raise ModelLoadError(
                f'{where} "{alias}" declares dtype {declared}, but {file} has {tf_name(dtype)}'
            )
        declared_shape = _declared_shape(info, shape, f'{where} "{alias}"')
        specs[alias] = TensorSpec(alias, tensor, dtype, shape, declared_shape)
    return specs


def _declared_shape(info: Mapping[str, Any], graph_shape: Shape, where: str) -> Shape:
    if "tensor_shape" not in info:
        return graph_shape
    raw = info["tensor_shape"]
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(d, int) and d >= -1 for d in raw):
        raise ModelLoadError(f"{where}: tensor_shape must be a list of sizes (-1 for any) or null")
    return tuple(None if d == -1 else d for d in raw)
