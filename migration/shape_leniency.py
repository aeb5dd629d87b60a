"""Let a converted graph take the input shapes TF Serving takes for the SavedModel.

TF Serving feeds a request's tensors to the graph without checking them
against the signature's shapes: half_plus_two, whose ``x`` is declared
[-1, 1], answers ``x`` of shape [3] or [1], and clients rely on it. tf2onnx
writes the declared shape into the ONNX graph, so the server would refuse
those. For each input, this widens the ONNX graph's input to any shape, else
to its rank with any sizes, when probes show the wider graph answers as
TensorFlow does: some probe of the wider kind must succeed in TensorFlow,
every probe both succeed on must agree, and none may be answered by ONNX and
refused by TensorFlow. Otherwise the declared shape stays, and with it the
server's clear refusal of shapes the original graph cannot take.

Only graphs without TF2 functions are probed (TF1 exports): inside a function
call, TensorFlow's shape inference cannot screen a probe, and some kernels abort
the process on a shape they cannot take. TF2 exports keep their declared shapes.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnx_serving.migration.saved_model import SignatureSig, TensorFlowRunner, TensorSig
from onnx_serving.migration.validate import OutputError, accumulate, random_tensor
from onnx_serving.server.runtime.ort_errors import ORT_ERRORS

ANY_SHAPE, ANY_SIZES = "any shape", "any sizes"


def widen_inputs(
    model: Path, runner: TensorFlowRunner, signature: SignatureSig, names: Mapping[str, str],
    *, atol: float, rtol: float, skip: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Widens ``model``'s inputs in place; returns alias → how, for those widened.
    ``names``: alias → ONNX tensor, inputs and outputs alike."""
    import tensorflow as tf

    graph_def = runner.graph.as_graph_def()
    if graph_def.library.function:
        return {}  # TF2 functions: a wrong shape may abort TensorFlow inside them, unprobed
    tf_errors: tuple[type[Exception], ...] = (tf.errors.OpError, ValueError)
    rng = np.random.default_rng(0)
    base = {
        alias: random_tensor(spec, rng) for alias, spec in signature.inputs.items()
        if alias not in skip
    }
    widened: dict[str, str] = {}
    for alias, spec in signature.inputs.items():
        if alias in skip or spec.shape is None or spec.numpy.kind not in "biuf":
            continue
        shape = base[alias].shape
        size_probes = [
            (*shape[:i], d + 1, *shape[i + 1:]) for i, d in enumerate(spec.shape) if d >= 0
        ]
        rank_probes = list(dict.fromkeys(
            p for p in ((int(np.prod(shape)),), (1,), (2, *shape)) if p != shape
        ))
        for how, probes in ((ANY_SHAPE, rank_probes + size_probes), (ANY_SIZES, size_probes)):
            candidate = _widened(onnx.load(str(model)), names[alias], how)
            with tempfile.TemporaryDirectory() as scratch:
                path = Path(scratch) / "model.onnx"
                onnx.save(candidate, str(path))
                try:
                    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                except ORT_ERRORS:
                    continue
            run = functools.partial(_run_onnx, session, signature, names)
            expected = functools.partial(_run_tensorflow, runner, graph_def, signature)
            if _agrees(alias, spec, probes, base, rng, expected, run, tf_errors, atol, rtol):
                onnx.save(candidate, str(model))
                widened[alias] = how
                break
    return widened


def _run_tensorflow(
    runner: TensorFlowRunner, graph_def: Any, signature: SignatureSig,
    inputs: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Runs only what TensorFlow's shape inference accepts: some kernels abort the process
    on shapes their op's inference refuses (oneDNN's Conv2D given another rank)."""
    import tensorflow as tf

    with tf.Graph().as_default():
        feeds = {
            signature.inputs[alias].name: tf.compat.v1.placeholder(tf.as_dtype(v.dtype), v.shape)
            for alias, v in inputs.items()
        }
        tf.graph_util.import_graph_def(graph_def, input_map=feeds, name="")  # ValueError if not
    return runner.run(signature.name, inputs)


def _run_onnx(
    session: ort.InferenceSession, signature: SignatureSig, names: Mapping[str, str],
    inputs: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    outputs = list(signature.outputs)
    values = session.run([names[a] for a in outputs], {names[a]: v for a, v in inputs.items()})
    return dict(zip(outputs, values, strict=True))


def _widened(model: onnx.ModelProto, name: str, how: str) -> onnx.ModelProto:
    graph = model.graph
    for value in graph.input:
        if value.name != name:
            continue
        tensor = value.type.tensor_type
        if how == ANY_SHAPE:
            tensor.ClearField("shape")
        else:
            for i, dim in enumerate(tensor.shape.dim):
                dim.Clear()
                dim.dim_param = f"{name}_{i}"
    # Shapes inferred from the narrower input no longer hold.
    del graph.value_info[:]
    for value in graph.output:
        value.type.tensor_type.ClearField("shape")
    return model


def _agrees(
    alias: str, spec: TensorSig, probes: list[tuple[int, ...]], base: dict[str, np.ndarray],
    rng: np.random.Generator,
    expected: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    run: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    tf_errors: tuple[type[Exception], ...], atol: float, rtol: float,
) -> bool:
    answered = False
    for shape in probes:
        inputs = {**base, alias: random_tensor(TensorSig(alias, spec.name, spec.dtype, shape), rng)}
        try:
            theirs: dict[str, np.ndarray] | None = expected(inputs)
        except tf_errors:
            theirs = None
        try:
            ours: dict[str, np.ndarray] | None = run(inputs)
        except ORT_ERRORS:
            ours = None
        if ours is not None and theirs is None:
            return False
        if ours is None or theirs is None:
            continue
        for output, value in theirs.items():
            error = OutputError()
            accumulate(error, value, ours[output], atol, rtol)
            if error.mismatch or error.outside:
                return False
        answered = True
    return answered
