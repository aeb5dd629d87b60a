"""Cutting a TF1 signature's graph where ONNX cannot follow TensorFlow, before tf2onnx.

Two kinds of signature inputs need a cut:

- a placeholder of serialized tf.Example read by ``ParseExample``/``ParseExampleV2``
  (Classify/Regress signatures, Estimator exports): ONNX has no such op. The graph
  is cut after the parse: each parsed tensor the outputs need becomes a placeholder,
  and the op's feature spec is recorded for the server's parse stage
  (``parse_example`` in signatures.json, docs/signatures.md);
- an intermediate tensor (TF Serving's half_plus_two feeds ``x``, the output of
  the parse): TF Serving feeds it directly, so it becomes a placeholder too.

The cut graph is frozen (variables as constants) and handed to tf2onnx as a GraphDef.
A TF2 signature that parses tf.Example inside its function is frozen first (the
function inlined), then cut the same way.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from onnx_serving.codec.tensors import dtype_name
from onnx_serving.migration.saved_model import SignatureSig, run_in_session

PARSE_OPS = ("ParseExample", "ParseExampleV2")
_PARSED_PREFIX = "onnx_serving_parsed"
_OUTPUT_PREFIX = "onnx_serving_output"


class CutError(Exception):
    pass


class GraphSession(Protocol):
    """A graph and a session over it (TensorFlowRunner, FrozenFunction)."""

    graph: Any
    session: Any

    def run_tensors(self, feeds: Any, fetches: list[Any]) -> list[np.ndarray]: ...


@dataclass
class FrozenFunction:
    """A TF2 signature's function with its variables as constants, as a TF1 graph."""

    graph: Any
    session: Any

    def run_tensors(self, feeds: Any, fetches: list[Any]) -> list[np.ndarray]:
        return run_in_session(self.session, feeds, fetches)


def parses_in_functions(runner: GraphSession) -> bool:
    """Whether some TF2 function of the SavedModel parses tf.Example."""
    library = runner.graph.as_graph_def().library
    return any(node.op in PARSE_OPS for f in library.function for node in f.node_def)


def freeze_function(
    saved_dir: Path, tag: str, signature: SignatureSig
) -> tuple[FrozenFunction, SignatureSig]:
    """The signature's function inlined and frozen, and the signature renamed onto it."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    loaded = tf.saved_model.load(str(saved_dir), tags=[tag])
    function = loaded.signatures[signature.name]
    frozen = convert_variables_to_constants_v2(function)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(frozen.graph.as_graph_def(), name="")
    # The frozen function's inputs and outputs follow its keyword arguments and output
    # keys, sorted (tf.nest's order).
    inputs = dict(zip(sorted(function.structured_input_signature[1]), frozen.inputs,
                      strict=False))
    outputs = dict(zip(sorted(function.structured_outputs), frozen.outputs, strict=True))
    renamed = replace(
        signature,
        inputs={a: replace(s, name=inputs[a].name) for a, s in signature.inputs.items()},
        outputs={a: replace(s, name=outputs[a].name) for a, s in signature.outputs.items()},
    )
    return FrozenFunction(graph, tf.compat.v1.Session(graph=graph)), renamed


@dataclass
class Cut:
    """A signature's graph, cut: what tf2onnx converts and how signatures.json names it."""

    graph_def: bytes  # frozen GraphDef
    # Lookup tables' contents by shared name (tf2onnx turns them into constants).
    tables: dict[bytes, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # alias → placeholder tensor
    outputs: dict[str, str] = field(default_factory=dict)  # alias → tensor
    parse: dict[str, Any] | None = None  # the parse_example entry, graph inputs by tensor name
    # alias → the signature's own tensor, where ``outputs`` reads it through an Identity
    # (``_identity_outputs``); the converted graph gives the outputs these names back.
    tf_outputs: dict[str, str] = field(default_factory=dict)

    @property
    def input_tensors(self) -> list[str]:
        """Every placeholder tf2onnx must keep as a graph input."""
        names = list(self.inputs.values())
        if self.parse is not None:
            for feature in self.parse["dense"]:
                names += [feature["name"]] if feature["name"] else []
            for feature in self.parse["sparse"]:
                names += [feature[k] for k in ("indices", "values", "dense_shape") if feature[k]]
        return names


def needs_cut(runner: GraphSession, signature: SignatureSig) -> bool:
    """Whether tf2onnx alone cannot take this signature: it parses tf.Example or is fed
    at an intermediate tensor. Signatures of TF2 functions never are: their inputs
    are placeholders that feed a function call."""
    for spec in signature.inputs.values():
        tensor = runner.graph.get_tensor_by_name(spec.name)
        if tensor.op.type != "Placeholder":
            return True
        if any(op.type in PARSE_OPS for op in _readers(tensor)):
            return True
    return False


def records_other_shapes(runner: GraphSession, signature: SignatureSig) -> bool:
    """Whether the signature records a shape its graph tensor cannot have (TF Serving's
    saved_model_half_plus_three records scalars over [-1, 1]). TF Serving never checks
    them, but ``tf.saved_model.load``, by which tf2onnx reads a SavedModel, sets every
    signature's recorded shapes on its graph and refuses the whole SavedModel."""
    return any(
        spec.shape is not None and not runner.graph.get_tensor_by_name(spec.name).shape
        .is_compatible_with([None if d < 0 else d for d in spec.shape])
        for spec in (*signature.inputs.values(), *signature.outputs.values())
    )


def _readers(tensor: Any) -> list[Any]:
    """The ops reading a tensor, looking through Identity ops (an inlined function's
    arguments pass through one)."""
    readers = []
    for op in tensor.consumers():
        readers += _readers(op.outputs[0]) if op.type == "Identity" else [op]
    return readers


def cut(runner: GraphSession, signature: SignatureSig) -> Cut:
    import tensorflow as tf

    graph = runner.graph
    # Tensor name → the placeholder that replaces it.
    replaced: dict[str, tuple[str, Any]] = {}
    result = Cut(b"")
    parse_op = None
    for alias, spec in signature.inputs.items():
        tensor = graph.get_tensor_by_name(spec.name)
        readers = _readers(tensor)
        parsers = [op for op in readers if op.type in PARSE_OPS]
        if tensor.op.type == "Placeholder" and not parsers:
            result.inputs[alias] = tensor.name
        elif parsers:
            if parse_op is not None or len(parsers) != len(readers):
                raise CutError(f"input {alias} ({spec.name}) is parsed as tf.Example but also "
                               "read by other ops; only a tf.Example input read by one "
                               "ParseExample can be served")
            parse_op = (alias, parsers[0])
        else:
            placeholder = tensor.op.name if len(tensor.op.outputs) == 1 else \
                f"{_PARSED_PREFIX}/input_{len(replaced)}"
            replaced[tensor.name] = (placeholder, tensor)
            result.inputs[alias] = f"{placeholder}:0"
    result.outputs = {alias: spec.name for alias, spec in signature.outputs.items()}
    if parse_op is not None:
        alias, op = parse_op
        needed = _tensors_needed(
            [graph.get_tensor_by_name(n) for n in result.outputs.values()],
            stop={graph.get_tensor_by_name(n) for n in replaced}, of_op=op,
        )
        result.parse = _parse_spec(runner, alias, op, needed, replaced)
    graph_def = graph.as_graph_def()
    result.tf_outputs = dict(result.outputs)
    result.outputs = _identity_outputs(graph_def, graph, result.outputs)
    shapes = _shapes_for_vector_examples(graph_def, graph)
    _replace_with_placeholders(graph_def, replaced, shapes)
    output_ops = sorted({name.split(":")[0] for name in result.outputs.values()})
    frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
        runner.session, graph_def, output_ops
    )
    result.tables = _tables(runner, frozen)
    result.graph_def = frozen.SerializeToString()
    return result


def _identity_outputs(graph_def: Any, graph: Any, outputs: dict[str, str]) -> dict[str, str]:
    """Each signature output read through an Identity of its own (alias → its tensor), as
    a TF2 function's outputs are. tf2onnx renames the tensor a graph output is made by
    (``AsString_raw_output___9:0``) before its handlers run, and a handler that rebuilds
    its node under the node's name (AsString, StringToNumber and others in tf2onnx 1.17)
    then loses it: "Cannot find node with output ...". Through an Identity, the node
    tf2onnx renames is one its Identity handler keeps."""
    renamed: dict[str, str] = {}
    for alias, tensor_name in outputs.items():
        safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in alias)
        name = f"{_OUTPUT_PREFIX}/{safe}"
        if f"{name}:0" in renamed.values():  # aliases alike once made safe
            name = f"{name}_{len(renamed)}"
        node = graph_def.node.add()
        node.name, node.op = name, "Identity"
        op_name, _, index = tensor_name.partition(":")
        node.input.append(op_name if index in ("", "0") else tensor_name)
        node.attr["T"].type = graph.get_tensor_by_name(tensor_name).dtype.as_datatype_enum
        renamed[alias] = f"{name}:0"
    return renamed


def _shapes_for_vector_examples(graph_def: Any, graph: Any) -> Any:
    """The graph re-imported with every tf.Example placeholder a vector: the parse outputs,
    and tensors made from them, then have their rank (TF1 exports often leave the
    placeholder's shape unknown; Classify and Regress always send a vector)."""
    import tensorflow as tf

    vectors = {
        op.outputs[0].name for op in graph.get_operations()
        if op.type == "Placeholder" and op.outputs[0].dtype == tf.string
        and any(c.type in PARSE_OPS for c in _readers(op.outputs[0]))
    }
    shaped = tf.Graph()
    with shaped.as_default():
        feeds = {name: tf.compat.v1.placeholder(tf.string, [None]) for name in vectors}
        tf.graph_util.import_graph_def(graph_def, input_map=feeds, name="")
    return shaped


def _tables(runner: GraphSession, frozen: Any) -> dict[bytes, tuple[np.ndarray, np.ndarray]]:
    """Every hash table the cut graph reads, exported from the loaded session; a table
    without a shared name gets its node's, which tf2onnx needs to match it."""
    import tensorflow as tf

    tables: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
    for node in frozen.node:
        if node.op not in ("HashTableV2", "MutableHashTableV2"):
            continue
        if not node.attr["shared_name"].s:
            node.attr["shared_name"].s = node.name.encode()
        handle = runner.graph.get_tensor_by_name(f"{node.name}:0")
        with runner.graph.as_default():
            keys, values = tf.raw_ops.LookupTableExportV2(
                table_handle=handle, Tkeys=node.attr["key_dtype"].type,
                Tvalues=node.attr["value_dtype"].type,
            )
        contents = runner.run_tensors({}, [keys, values])
        tables[node.attr["shared_name"].s] = (contents[0], contents[1])
    return tables


def _tensors_needed(outputs: Iterable[Any], stop: set[Any], of_op: Any) -> set[Any]:
    """Which of ``of_op``'s outputs the signature's outputs depend on."""
    needed: set[Any] = set()
    seen: set[Any] = set()
    pending = list(outputs)
    while pending:
        tensor = pending.pop()
        if tensor in seen or tensor in stop:
            continue
        seen.add(tensor)
        if tensor.op is of_op:
            needed.add(tensor)
            continue
        pending += list(tensor.op.inputs)
        pending += [t for op in tensor.op.control_inputs for t in op.outputs]
    return needed


def _parse_spec(
    runner: GraphSession, alias: str, op: Any, needed: set[Any],
    replaced: dict[str, tuple[str, Any]],
) -> dict[str, Any]:
    """The op's features, read from its attributes and constant inputs; each parsed
    tensor the outputs need is added to ``replaced``."""
    import tensorflow as tf

    if op.type == "ParseExampleV2":
        num_sparse, num_dense = op.get_attr("num_sparse"), len(op.get_attr("Tdense"))
        ragged_keys = _constant(runner, op.inputs[4])
        if ragged_keys.size:
            raise CutError(f"{op.name} parses ragged features {ragged_keys.tolist()}, "
                           "which the server's parse stage does not support")
        sparse_keys = _constant(runner, op.inputs[2]).tolist()
        dense_keys = _constant(runner, op.inputs[3]).tolist()
        defaults = op.inputs[5:5 + num_dense]
    else:
        num_sparse, num_dense = op.get_attr("Nsparse"), op.get_attr("Ndense")
        keys = [_constant(runner, t).item() for t in op.inputs[2:2 + num_sparse + num_dense]]
        sparse_keys, dense_keys = keys[:num_sparse], keys[num_sparse:]
        defaults = op.inputs[2 + num_sparse + num_dense:]
    sparse_types, dense_types = op.get_attr("sparse_types"), op.get_attr("Tdense")
    dense_shapes = op.get_attr("dense_shapes")

    def placeholder(index: int, suffix: str) -> str | None:
        tensor = op.outputs[index]
        if tensor not in needed:
            return None
        name = f"{_PARSED_PREFIX}/{suffix}"
        replaced[tensor.name] = (name, tensor)
        return f"{name}:0"

    dense = []
    for i, (key, dtype, shape, default) in enumerate(
        zip(dense_keys, dense_types, dense_shapes, defaults, strict=True)
    ):
        dims = tf.TensorShape(shape).as_list()
        if any(d is None or d < 0 for d in dims):
            raise CutError(f"{op.name}: feature {_text(key)!r} has variable length "
                           f"(FixedLenSequenceFeature), which the server's parse stage does "
                           "not support")
        value = _constant(runner, default)
        dense.append({
            "key": _text(key), "dtype": dtype_name(tf.as_dtype(dtype).as_datatype_enum),
            "shape": dims, "default": _default(value) if value.size else None,
            "name": placeholder(3 * num_sparse + i, f"dense_{i}"),
        })
    sparse = [
        {"key": _text(key), "dtype": dtype_name(tf.as_dtype(dtype).as_datatype_enum),
         "indices": placeholder(i, f"sparse_{i}_indices"),
         "values": placeholder(num_sparse + i, f"sparse_{i}_values"),
         "dense_shape": placeholder(2 * num_sparse + i, f"sparse_{i}_dense_shape")}
        for i, (key, dtype) in enumerate(zip(sparse_keys, sparse_types, strict=True))
    ]
    return {"input": alias, "dense": dense, "sparse": sparse}


def _constant(runner: GraphSession, tensor: Any) -> np.ndarray:
    import tensorflow as tf

    try:
        return runner.run_tensors({}, [tensor])[0]
    except tf.errors.OpError as exc:  # it depends on a fed tensor
        raise CutError(f"{tensor.name} is not a constant: {exc.message}") from exc


def _text(key: object) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)


def _default(value: np.ndarray) -> list[Any]:
    flat = value.reshape(-1)
    if flat.dtype == object:
        return [base64.b64encode(v).decode() for v in flat]
    return flat.tolist()


def _replace_with_placeholders(
    graph_def: Any, replaced: dict[str, tuple[str, Any]], shapes: Any
) -> None:
    """Each replaced tensor becomes a placeholder of its dtype and static shape (as in
    ``shapes``, a graph with the same names), and its readers read that instead; a
    single-output op is replaced in place, keeping its name."""
    import tensorflow as tf

    nodes = {node.name: node for node in graph_def.node}
    renames: dict[str, str] = {}
    for tensor_name, (placeholder, tensor) in replaced.items():
        if placeholder == tensor.op.name:
            node = nodes[placeholder]
            node.Clear()
        else:
            node = graph_def.node.add()
            renames[tensor_name] = placeholder
            if tensor.value_index == 0:
                renames[tensor.op.name] = placeholder
        node.name, node.op = placeholder, "Placeholder"
        node.attr["dtype"].type = tensor.dtype.as_datatype_enum
        shape = shapes.get_tensor_by_name(tensor_name).shape
        node.attr["shape"].shape.CopyFrom(tf.TensorShape(shape).as_proto())
    for node in graph_def.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]

