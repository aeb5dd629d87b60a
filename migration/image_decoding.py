"""Cuts a converted graph's image decoding off at its signature input; the server decodes.

TF Serving's image models (its ResNet example) take encoded JPEG/PNG bytes and
decode them in the graph (``tf.io.decode_jpeg`` inside a ``tf.map_fn``, then a
resize). ONNX has no decoder ONNX Runtime runs, and onnxruntime-extensions'
``DecodeImage`` uses the accurate DCT without libjpeg's fancy chroma upsampling
(pixels up to 104 levels off TensorFlow's). So tf2onnx passes the decode ops
through, and here:

- the signature input becomes the decoded images: a ``seq(tensor(uint8))`` for a
  batch of encoded images (each ``Gather`` of one becomes a ``SequenceAt``, its
  ``Shape`` the sequence's length), one ``uint8`` tensor for a scalar input;
- each decode op becomes an Identity;
- the ONNX file's metadata records the op and its attributes, from which the
  server (server/runtime/images.py) decodes what clients send, with Pillow.

A decode of anything but a signature input (a string computed in the graph)
cannot be cut and is reported with the op's name.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnx_serving.server.runtime.images import DECODE_OPS, METADATA_KEY, ImageDecoding

TF_DOMAIN = "ai.onnx.converters.tensorflow"


class ImageDecodingError(Exception):
    def __init__(self, message: str, op: str) -> None:
        super().__init__(message)
        self.op = op


def cut_decoding(path: Path) -> dict[str, ImageDecoding]:
    """Rewrites the model at ``path`` in place; returns the inputs the server now decodes."""
    model = onnx.load(str(path), load_external_data=False)
    main = model.graph
    inputs = {v.name: v for v in main.input}
    decodings: dict[str, ImageDecoding] = {}
    for graph, node in list(_nodes(main)):
        if node.domain != TF_DOMAIN or node.op_type not in DECODE_OPS:
            continue
        name, batched = _source(graph, node, inputs)
        decoding = _decoding(node, batched)
        if decodings.setdefault(name, decoding) != decoding:
            raise ImageDecodingError(
                f"input '{name}' is decoded twice, differently ({decodings[name]} and {decoding})",
                node.op_type,
            )
        node.op_type, node.domain = "Identity", ""
        del node.attribute[:]
        _forget_types(graph, node.output[0])
    if not decodings:
        return {}
    for name, decoding in decodings.items():
        _rewrite_other_uses(main, name)
        _retype(inputs[name], decoding)
    if not any(n.domain == TF_DOMAIN for _, n in _nodes(main)):
        kept = [o for o in model.opset_import if o.domain != TF_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    onnx.helper.set_model_props(model, {
        **{p.key: p.value for p in model.metadata_props},
        METADATA_KEY: json.dumps({n: d.to_json() for n, d in decodings.items()}),
    })
    onnx.save(model, str(path))
    return decodings


def _nodes(graph: onnx.GraphProto) -> Iterator[tuple[onnx.GraphProto, onnx.NodeProto]]:
    for node in graph.node:
        yield graph, node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _nodes(attribute.g)


def _source(
    graph: onnx.GraphProto, node: onnx.NodeProto, inputs: dict[str, onnx.ValueInfoProto]
) -> tuple[str, bool]:
    """The signature input a decode op reads: itself (one image) or one of its elements."""
    source = node.input[0]
    if source in inputs:
        return source, False
    producer = next((n for n in graph.node if source in n.output), None)
    if producer is not None and producer.op_type == "Gather" and producer.input[0] in inputs:
        producer.op_type = "SequenceAt"
        del producer.attribute[:]
        _forget_types(graph, producer.output[0])
        return producer.input[0], True
    raise ImageDecodingError(
        f"{node.op_type} ({node.name}) decodes a string computed in the graph, not a signature "
        "input; only a signature input's images can be decoded by the server",
        node.op_type,
    )


def _decoding(node: onnx.NodeProto, batched: bool) -> ImageDecoding:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    dtype = attrs.get("dtype", TensorProto.UINT8)
    if dtype != TensorProto.UINT8:
        raise ImageDecodingError(
            f"{node.op_type} ({node.name}) decodes to {TensorProto.DataType.Name(dtype)}; "
            "only uint8 images are decoded by the server",
            node.op_type,
        )
    dct_method = attrs.get("dct_method", b"")
    return ImageDecoding(
        node.op_type, int(attrs.get("channels", 0)), int(attrs.get("ratio", 1)),
        bool(attrs.get("expand_animations", True)), batched,
        dct_method.decode() if isinstance(dct_method, bytes) else str(dct_method),
    )


def _forget_types(graph: onnx.GraphProto, name: str) -> None:
    """tf2onnx recorded a string type for what is now an image: let ONNX Runtime infer it."""
    kept = [v for v in graph.value_info if v.name != name]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _rewrite_other_uses(main: onnx.GraphProto, name: str) -> None:
    """A batch's ``Shape`` becomes its sequence length; any other use cannot be kept."""
    for graph, node in list(_nodes(main)):
        if name not in node.input or node.op_type in ("SequenceAt", "Identity"):
            continue
        if node.op_type != "Shape" or len(node.input) != 1:
            raise ImageDecodingError(
                f"input '{name}' is decoded as images but also read by {node.op_type} "
                f"({node.name}) as bytes; the server cannot give the graph both",
                node.op_type,
            )
        length = f"{node.output[0]}/sequence_length"
        one = f"{node.output[0]}/one"
        position = list(graph.node).index(node)
        graph.node.insert(position, helper.make_node(
            "Constant", [], [one], value=helper.make_tensor(one, TensorProto.INT64, [1], [1])
        ))
        graph.node.insert(position, helper.make_node("SequenceLength", [name], [length]))
        node.op_type = "Reshape"
        del node.attribute[:]
        node.input[:] = [length, one]


def _retype(value: onnx.ValueInfoProto, decoding: ImageDecoding) -> None:
    shape = None
    if decoding.op != "DecodeGif" and not (decoding.op == "DecodeImage"
                                           and decoding.expand_animations):
        shape = [None, None, decoding.channels or None]
    image = helper.make_tensor_type_proto(TensorProto.UINT8, shape)
    value.type.CopyFrom(helper.make_sequence_type_proto(image) if decoding.batched else image)


def with_sample_images(
    samples: list[dict[str, np.ndarray]], images: Mapping[str, ImageDecoding], seed: int
) -> list[dict[str, np.ndarray]]:
    """Validation inputs with generated images for the image inputs (alias → decoding).

    Lossless formats (PNG; BMP or GIF for their own ops), so that validation measures
    the conversion: JPEG decoders differ by a few levels (docs/migration.md).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)

    def encoded(decoding: ImageDecoding) -> bytes:
        height, width = (int(s) for s in rng.integers(24, 96, 2))
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * rng.uniform(1, 4), y * rng.uniform(1, 4), (x + y) * 2.0], -1)
        pixels = np.clip(base % 256 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        kind = {"DecodeBmp": "BMP", "DecodeGif": "GIF"}.get(decoding.op, "PNG")
        Image.fromarray(pixels).save(buffer, kind)
        return buffer.getvalue()

    def batch(decoding: ImageDecoding) -> np.ndarray:
        array = np.empty(2 if decoding.batched else 1, dtype=object)
        array[:] = [encoded(decoding) for _ in range(len(array))]
        return array if decoding.batched else array.reshape(())

    return [{**sample, **{a: batch(d) for a, d in images.items()}} for sample in samples]
