"""One signature of one SavedModel version through tf2onnx, in a child process.

The child process keeps TensorFlow's graph state, memory and any crash
away from the conversion loop; what tf2onnx could not convert is read from
its log and from the ONNX graph it wrote (ops left in TensorFlow's domain).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from onnx_serving.migration.image_decoding import ImageDecodingError, cut_decoding
from onnx_serving.server.runtime import extensions
from onnx_serving.server.runtime.images import DECODE_OPS

# Domains ONNX Runtime runs (with onnxruntime-extensions, loaded by the server for the
# models that use it); anything else is an op tf2onnx passed through unconverted.
RUNNABLE_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", *extensions.DOMAINS)
# tf2onnx 1.17's --large_model path still calls numpy.product, which numpy 2 removed.
# Our handlers (tf2onnx_handlers) register before tf2onnx converts.
_RUN_TF2ONNX = (
    "import runpy, sys, numpy; numpy.product = getattr(numpy, 'product', numpy.prod); "
    "import onnx_serving.migration.tf2onnx_handlers; "
    "sys.argv[0] = 'tf2onnx.convert'; "
    "runpy.run_module('tf2onnx.convert', run_name='__main__', alter_sys=True)"
)
_UNSUPPORTED = re.compile(r"Unsupported ops: Counter\(\{(.*?)\}\)")
_OP_NAME = re.compile(r"'([^']+)'")


class ConversionError(Exception):
    def __init__(self, message: str, unsupported_ops: list[str] | None = None) -> None:
        super().__init__(message)
        self.unsupported_ops = unsupported_ops or []


@dataclass(frozen=True)
class Converted:
    model: Path  # the ONNX file (its external data, if any, beside it)


def convert_signature(
    saved_model_dir: Path,
    signature: str,
    output: Path,
    *,
    tag: str = "serve",
    opset: int = 17,
    large_model: bool = False,
) -> Converted:
    source = ["--saved-model", str(saved_model_dir), "--tag", tag, "--signature_def", signature]
    return _convert(source, output, opset=opset, large_model=large_model)


def convert_graph_def(
    graph_def: Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
    output: Path,
    *,
    opset: int = 17,
    large_model: bool = False,
    tables: Mapping[bytes, tuple[Any, Any]] | None = None,
) -> Converted:
    """A frozen GraphDef (a signature's graph cut by graph_cut.py), its tensors named, and
    the contents of the lookup tables it reads, by shared name.

    Converted in this process, which has TensorFlow loaded already (the graph was cut
    here): a child would spend seconds importing it again for each signature. Models
    over 2 GB still go through a child, as tf2onnx's zip output needs its CLI (and
    their lookup tables are not carried).
    """
    if large_model:
        source = ["--graphdef", str(graph_def), "--inputs", ",".join(inputs),
                  "--outputs", ",".join(outputs)]
        return _convert(source, output, opset=opset, large_model=True)
    import tensorflow as tf
    from tf2onnx import convert as tf2onnx_convert
    from tf2onnx import tf_loader

    import onnx_serving.migration.tf2onnx_handlers  # noqa: F401  (registers ours, as the child)

    frozen = tf.compat.v1.GraphDef.FromString(graph_def.read_bytes())
    try:
        # tf2onnx's from_graph_def, which cannot take lookup tables' contents.
        with tf.device("/cpu:0"), tf.Graph().as_default():
            optimized = tf_loader.tf_optimize(list(inputs), list(outputs), frozen)
        tf2onnx_convert._convert_common(
            optimized, name="converted", continue_on_error=True, opset=opset,
            input_names=list(inputs), output_names=list(outputs),
            initialized_tables=dict(tables or {}), output_path=str(output),
        )
    except Exception as exc:  # tf2onnx raises whatever its converters raise
        raise ConversionError(f"tf2onnx: {type(exc).__name__}: {exc}") from exc
    leftovers = _foreign_ops(output)
    if leftovers:
        raise ConversionError("tf2onnx left operators ONNX Runtime cannot run", leftovers)
    return Converted(output)


def _convert(source: list[str], output: Path, *, opset: int, large_model: bool) -> Converted:
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / ("model.zip" if large_model else "model.onnx")
        command = [
            sys.executable, "-c", _RUN_TF2ONNX, *source, "--opset", str(opset),
            "--output", str(target),
            # Passed through for image_decoding to cut off: the server decodes images.
            "--custom-ops", ",".join(DECODE_OPS),
            # String ops to onnxruntime-extensions' (tf2onnx's handlers, and ours).
            "--extra_opset", f"{extensions.DOMAINS[0]}:1",
        ]
        if large_model:
            command.append("--large_model")
        result = subprocess.run(command, capture_output=True, text=True)
        log = result.stdout + result.stderr
        unsupported = _unsupported_from_log(log)
        if result.returncode != 0 or not target.exists():
            raise ConversionError(_last_error(log), unsupported)
        if large_model:
            _unzip_large_model(target, output)
        else:
            shutil.move(str(target), output)
    try:
        cut_decoding(output)
    except ImageDecodingError as exc:
        raise ConversionError(str(exc), [exc.op]) from exc
    leftovers = _foreign_ops(output)
    if leftovers or unsupported:
        raise ConversionError(
            "tf2onnx left operators ONNX Runtime cannot run", sorted(set(leftovers + unsupported))
        )
    return Converted(output)


def _unsupported_from_log(log: str) -> list[str]:
    ops: list[str] = []
    for match in _UNSUPPORTED.finditer(log):
        ops += _OP_NAME.findall(match.group(1))
    return ops


def _last_error(log: str) -> str:
    lines = [line for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["tf2onnx failed without a message"])[-1].strip()


def _foreign_ops(model_path: Path) -> list[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    found: set[str] = set()
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.domain not in RUNNABLE_DOMAINS:
                found.add(f"{node.domain}.{node.op_type}" if node.domain else node.op_type)
            graphs += [attr.g for attr in node.attribute if attr.HasField("g")]
    return sorted(found)


def _unzip_large_model(archive: Path, output: Path) -> None:
    """tf2onnx's --large_model writes a zip: the graph plus one file per big tensor."""
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(output.parent)
    (output.parent / "__MODEL_PROTO.onnx").rename(output)
