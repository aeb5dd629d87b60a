"""What a SavedModel version offers: its serving signatures, read from saved_model.pb.

The signatures are read from the protobuf itself, not from the loaded
object, so method names, aliases, dtypes and shapes are exactly what TF
Serving reported to clients, and what the converted repository must report
too. TensorFlow is imported only to run a signature (for validation).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnx_serving.codec.tensors import dtype_name, numpy_dtype

INTERNAL_SIGNATURES = ("__saved_model_init_op",)
# The ops by which a TF2 signature's graph calls its function.
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


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
    # What it computes (``_computation``): signatures with equal ones convert to one model.
    computation: Hashable


class SavedModelError(Exception):
    pass


def quiet_cuda_probe() -> None:
    """Call before TensorFlow is imported. TensorFlow's CUDA build calls cuInit whenever it
    lists devices, as eager TensorFlow always does (``tf.saved_model.load``: compare's
    in-process baseline, graph_cut's frozen functions, tf2onnx's children), and logs its
    failure as an ERROR line on every machine without an NVIDIA GPU. Where there is none
    (no ``/dev/nvidia<N>``, or CUDA_VISIBLE_DEVICES hides them all) and the user chose no
    level, TensorFlow's C++ log level drops errors; TensorFlow's failures still raise.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    if hidden or not any(Path("/dev").glob("nvidia[0-9]*")):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def read_signatures(saved_model_dir: Path, tag: str = "serve") -> dict[str, SignatureSig]:
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = saved_model_dir / "saved_model.pb"
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except OSError as exc:
        raise SavedModelError(f"cannot read {path}: {exc}") from exc
    except DecodeError as exc:  # truncated or not a SavedModel: a report, not a crash
        raise SavedModelError(f"{path} is not a SavedModel: {exc}") from exc
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            nodes = {node.name: node for node in meta_graph.graph_def.node}
            functions = {f.signature.name: _function_body(f)
                         for f in meta_graph.graph_def.library.function}
            return {
                name: SignatureSig(
                    name,
                    signature.method_name,
                    {a: _tensor(a, t) for a, t in sorted(signature.inputs.items())},
                    {a: _tensor(a, t) for a, t in sorted(signature.outputs.items())},
                    _computation(signature, nodes, functions),
                )
                for name, signature in sorted(meta_graph.signature_def.items())
                if name not in INTERNAL_SIGNATURES
            }
    raise SavedModelError(f"{saved_model_dir} has no MetaGraph tagged '{tag}'")


def _computation(
    signature: Any, nodes: Mapping[str, Any], functions: Mapping[str, str]
) -> Hashable:
    """What a signature computes, from the graph, not from what tf2onnx makes of it.

    Keras 3's ``export`` writes ``serve`` and ``serving_default`` as two signature
    wrappers (their own placeholders and call nodes) over one function: an output made
    by a function call is that function's body (``_function_body``), the output's index
    and the call's arguments, this signature's inputs by alias. Any other output is its
    graph tensor, and then the inputs' tensors count too (a TF1 graph fed at ``x`` and
    one fed at the tf.Example it parses from both reach ``y``), as does any input not
    passed to a call as it is.
    """
    fed = {_tensor_name(info.name): alias for alias, info in signature.inputs.items()}
    outputs: list[tuple[object, ...]] = []
    by_tensor = False
    passed: set[str] = set()  # inputs passed to the calls as they are
    for alias, info in sorted(signature.outputs.items()):
        node_name, _, index = _tensor_name(info.name).partition(":")
        node = nodes.get(node_name)
        function = node.attr["f"].func.name if node is not None else ""
        if node is None or node.op not in _CALL_OPS or function not in functions:
            by_tensor = True
            outputs.append((alias, info.dtype, info.name))
            continue
        arguments = tuple(("input", fed[_tensor_name(i)]) if _tensor_name(i) in fed else i
                          for i in node.input)
        passed.update(a[1] for a in arguments if isinstance(a, tuple))
        outputs.append((alias, info.dtype, functions[function], index, arguments))
    inputs = tuple(
        (alias, info.dtype, info.tensor_shape.SerializeToString(deterministic=True),
         info.name if by_tensor or alias not in passed else "")
        for alias, info in sorted(signature.inputs.items())
    )
    return inputs, tuple(outputs)


def _function_body(function: Any) -> str:
    """A graph function less its name and its arguments' attributes (tracing counters in
    ``_user_specified_name``): two signature wrappers calling one function alike match."""
    body = type(function)()
    body.CopyFrom(function)
    body.signature.name = ""
    body.ClearField("arg_attr")
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


def _tensor_name(name: str) -> str:
    """``x`` and ``x:0`` name one tensor (NodeDef inputs leave out ``:0``)."""
    return name if ":" in name or name.startswith("^") else f"{name}:0"


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

        # The body of tf.compat.v1.saved_model.loader.load, which is deprecated (for the
        # eager tf.saved_model.load, which does not run the MetaGraph as TF Serving does).
        from tensorflow.python.saved_model.loader_impl import SavedModelLoader

        self.graph = tf.Graph()
        # The reference runs on the CPU: no GPU devices, so TensorFlow neither probes CUDA
        # (a cuInit error line on machines without one) nor takes a GPU's memory.
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default():
            meta_graph = SavedModelLoader(str(saved_model_dir)).load(self.session, [tag])
            _restore_unbound_captures(self.session, meta_graph, saved_model_dir)
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


def _restore_unbound_captures(session: Any, meta_graph: Any, saved_model_dir: Path) -> None:
    """Gives the variables a TF2 signature captures their saved values where the
    SavedModel's restore op leaves them out.

    ``tf.saved_model.save`` of a ``tf.Module`` holding Keras 3 layers (a
    ``keras.Sequential`` as an attribute, called by the serving function) writes a
    graph whose signature calls read the layers' variables through handles of their
    own (``sequential/conv2d/bias``), while the restore op fills copies of them
    (``Variable_3``): run as a graph (a TF1 session, TF Serving's C++ loader) the call
    answers "Could not find variable" (keras-team/keras#20095, #20096). Eager
    ``tf.saved_model.load`` is right, as it binds each function's captures to the
    restored variables by the object graph (``SavedConcreteFunction.bound_inputs``):
    here the same binding is followed, each uninitialized captured handle assigned
    its variable's value from the checkpoint, so validation sees TensorFlow's answers.
    A SavedModel whose captures are all restored is left as it is.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    functions = meta_graph.object_graph_def.concrete_functions
    graph = session.graph
    captured: dict[str, tuple[Any, int]] = {}  # handle op → (handle, object node id)
    for op in graph.get_operations():
        if op.type not in _CALL_OPS or op.get_attr("f").name not in functions:
            continue
        bound = functions[op.get_attr("f").name].bound_inputs
        if len(bound) > len(op.inputs):
            continue  # not a call of the function as saved: its captures are not these
        for handle, node_id in zip(list(op.inputs)[len(op.inputs) - len(bound):], bound,
                                   strict=True):
            if handle.op.type == "VarHandleOp":
                captured.setdefault(handle.op.name, (handle, node_id))
    if not captured:
        return
    handles = list(captured.values())
    initialized = session.run([tf.raw_ops.VarIsInitializedOp(resource=h) for h, _ in handles])
    unbound = [(h, n) for (h, n), done in zip(handles, initialized, strict=True) if not done]
    if not unbound:
        return
    reader = tf.train.load_checkpoint(str(saved_model_dir / "variables" / "variables"))
    objects = trackable_object_graph_pb2.TrackableObjectGraph.FromString(
        reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
    )
    feeds: dict[Any, np.ndarray] = {}
    assigns = []
    for handle, node_id in unbound:
        key = next((a.checkpoint_key for a in objects.nodes[node_id].attributes
                    if a.name == "VARIABLE_VALUE"), None)
        if key is None:
            continue  # not a saved variable: left as TensorFlow left it
        value = tf.compat.v1.placeholder(handle.op.get_attr("dtype"))
        assigns.append(tf.raw_ops.AssignVariableOp(resource=handle, value=value))
        feeds[value] = reader.get_tensor(key)
    session.run(assigns, feeds)


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
