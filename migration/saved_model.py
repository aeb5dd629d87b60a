"""What a SavedModel version offers: its serving signatures, read from saved_model.pb.

The signatures are read from the protobuf itself, not from the loaded
object, so method names, aliases, dtypes and shapes are exactly what TF
Serving reported to clients, and what the converted repository must report
too. TensorFlow is imported only to run a signature (for validation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_serving.codec.tensors import dtype_name, numpy_dtype

INTERNAL_SIGNATURES = ("__saved_model_init_op",)


@dataclass(frozen=True)
class TensorSig:
    alias: str
    name: str  # the graph tensor, "serving_default_x:0"
    dtype: int  # DataType number
    shape: tuple[int, ...] | None  # -1 for unknown sizes; None for unknown rank

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    @property
    def numpy(self) -> np.dtype:
        return numpy_dtype(self.dtype)


@dataclass(frozen=True)
class SignatureSig:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSig]
    outputs: Mapping[str, TensorSig]


class SavedModelError(Exception):
    pass


def read_signatures(saved_model_dir: Path, tag: str = "serve") -> dict[str, SignatureSig]:
    from tensorflow.core.protobuf import saved_model_pb2

    path = saved_model_dir / "saved_model.pb"
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except OSError as exc:
        raise SavedModelError(f"cannot read {path}: {exc}") from exc
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return {
                name: SignatureSig(
                    name,
                    signature.method_name,
                    {a: _tensor(a, t) for a, t in sorted(signature.inputs.items())},
                    {a: _tensor(a, t) for a, t in sorted(signature.outputs.items())},
                )
                for name, signature in sorted(meta_graph.signature_def.items())
                if name not in INTERNAL_SIGNATURES
            }
    raise SavedModelError(f"{saved_model_dir} has no MetaGraph tagged '{tag}'")


def _tensor(alias: str, info: Any) -> TensorSig:
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
    return TensorSig(alias, info.name, int(info.dtype), dims)


class TensorFlowRunner:
    """Runs one SavedModel's signatures as TF Serving does, in this process.

    The MetaGraph is loaded into a TF1 session and each signature is run by
    feeding its tensors by name. Like TF Serving's C++ session, and unlike
    TensorFlow's Python session and signature functions, nothing checks a
    feed against the tensor's static shape: a graph answers any shape its ops
    can compute (half_plus_two's ``x`` of shape [3] where [-1, 1] is
    declared), and validation must see the same. An intermediate tensor
    (half_plus_two's ``x``, parsed from tf.Example) is fed as TF Serving feeds it.
    """

    def __init__(self, saved_model_dir: Path, tag: str = "serve") -> None:
        import tensorflow as tf

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                self.session, [tag], str(saved_model_dir)
            )
        self.signature_defs = dict(meta_graph.signature_def)
        # What a run raises when the graph refuses its inputs.
        self.errors: tuple[type[Exception], ...] = (tf.errors.OpError,)

    def run(self, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        definition = self.signature_defs[signature]
        aliases = list(definition.outputs)
        fetches = [self.graph.get_tensor_by_name(definition.outputs[a].name) for a in aliases]
        feeds = {
            self.graph.get_tensor_by_name(definition.inputs[a].name): np.asarray(v)
            for a, v in inputs.items()
        }
        return dict(zip(aliases, self.run_tensors(feeds, fetches), strict=True))

    def run_tensors(self, feeds: Mapping[Any, np.ndarray], fetches: list[Any]) -> list[np.ndarray]:
        return run_in_session(self.session, feeds, fetches)


def run_in_session(
    session: Any, feeds: Mapping[Any, np.ndarray], fetches: list[Any]
) -> list[np.ndarray]:
    """The session's own run, below the Python layer that checks static shapes (and that
    tells the session of ops added since its last run)."""
    session._extend_graph()
    values = session._call_tf_sessionrun(
        None, {t._as_tf_output(): v for t, v in feeds.items()},
        [t._as_tf_output() for t in fetches], [], None,
    )
    return [np.asarray(v) for v in values]
