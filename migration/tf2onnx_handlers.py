"""tf2onnx handlers of our own, registered in the conversion's child process before it runs.

- StringUpper/StringLower: TensorFlow's ASCII case change, whatever the machine's locale.
- StringStrip, StringLength (in characters): onnxruntime-extensions' ops.
- ResizeBilinear/ResizeBicubic of integer images (a decoded JPEG's uint8): TensorFlow
  interpolates in float32 and answers float32; tf2onnx 1.17 hands the uint8 to ONNX's
  Resize, which answers rounded uint8 (and the graph then fails to load). A Cast to
  float32 first gives TensorFlow's values.
- AsString of integers: ONNX's Cast to string, in place (tf2onnx 1.17 rebuilds the node
  and loses its output when it is a graph output); other dtypes and formats are refused
  by name, as Cast writes them otherwise (``0.5`` for TensorFlow's ``0.500000``, ``1``
  for ``true``).
"""

from __future__ import annotations

from typing import Any

from onnx import TensorProto
from tf2onnx import constants, utils
from tf2onnx.custom_opsets.string_ops import StringLower
from tf2onnx.handler import tf_op
from tf2onnx.onnx_opset.nn import Resize


@tf_op(["ResizeBilinear", "ResizeBicubic"])
class ResizeInFloat:
    @classmethod
    def version_11(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        if ctx.get_dtype(node.input[0]) != TensorProto.FLOAT:
            cast = ctx.insert_new_node_on_input(node, "Cast", node.input[0], to=TensorProto.FLOAT)
            ctx.set_dtype(cast.output[0], TensorProto.FLOAT)
            ctx.copy_shape(cast.input[0], cast.output[0])
        Resize.version_11(ctx, node, **kwargs)


# Integer dtypes Cast writes as TensorFlow's AsString does (decimal, no padding).
_INTEGERS = frozenset({TensorProto.INT8, TensorProto.INT16, TensorProto.INT32, TensorProto.INT64,
                       TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32,
                       TensorProto.UINT64})


@tf_op("AsString")
class AsString:
    @classmethod
    def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        dtype = ctx.get_dtype(node.input[0])
        utils.make_sure(dtype in _INTEGERS, "AsString of %s: ONNX's Cast writes it unlike "
                        "TensorFlow", TensorProto.DataType.Name(dtype))
        width, fill = node.get_attr_value("width", -1), node.get_attr_value("fill", b"")
        utils.make_sure(width <= 0 and fill in (b"", ""),
                        "AsString with width %s and fill %r: ONNX's Cast does not pad", width, fill)
        node.type = "Cast"
        for name in list(node.attr):
            del node.attr[name]
        node.set_attr("to", TensorProto.STRING)


@tf_op(["StringLower", "StringUpper"])
class StringCase:
    """TensorFlow's default (encoding "") changes ASCII letters only, as ONNX's
    StringNormalizer does in the "C" locale, which every system has. tf2onnx leaves the
    locale unset, so ONNX Runtime asks for en_US.UTF-8 and fails where it is not
    installed. encoding "utf-8" (ICU's case mapping) goes to onnxruntime-extensions'
    StringUpper/StringLower (Unicode's simple case mapping, docs/migration.md)."""

    @classmethod
    def version_10(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        encoding = node.get_attr_value("encoding", b"")
        if encoding in (b"", ""):
            StringLower.version_10(ctx, node, **kwargs)
            node.set_attr("locale", "C")
            return
        utils.make_sure(
            constants.CONTRIB_OPS_DOMAIN in {o.domain for o in ctx.extra_opset},
            "%s with encoding %s needs onnxruntime-extensions", node.type, encoding,
        )
        node.domain = constants.CONTRIB_OPS_DOMAIN
        del node.attr["encoding"]


@tf_op("StringStrip", domain=constants.CONTRIB_OPS_DOMAIN)
class StringStrip:
    @classmethod
    def version_1(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        node.domain = constants.CONTRIB_OPS_DOMAIN


@tf_op("StringLength", domain=constants.CONTRIB_OPS_DOMAIN)
class StringLength:
    """onnxruntime-extensions counts characters: TensorFlow's unit UTF8_CHAR. The default
    unit BYTE has no counterpart and stays unconverted (named in the report)."""

    @classmethod
    def version_1(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
        unit = node.get_attr_value("unit", b"BYTE")
        utils.make_sure(unit in (b"UTF8_CHAR", "UTF8_CHAR"),
                        "StringLength counts bytes (unit BYTE): no onnxruntime-extensions op does")
        node.domain = constants.CONTRIB_OPS_DOMAIN
        del node.attr["unit"]
        ctx.set_dtype(node.output[0], TensorProto.INT64)
        length = ctx.insert_new_node_on_output("Cast", node.output[0], to=TensorProto.INT32)
        ctx.set_dtype(length.output[0], TensorProto.INT32)
