""":classify and :regress bodies → an Input of tf.Example, as TF Serving's
FillClassifyRegressRequestFromJson builds it, its checks in its order and its messages.

A feature's JSON value (or each element of its list) picks the feature's kind:
a number with a point or exponent is a float, an integer an int64, a bool an
int64 0 or 1, a string or ``{"b64": ...}`` bytes. Mixing kinds in one feature
is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from onnx_serving.protos.tensorflow.core.example import example_pb2, feature_pb2
from onnx_serving.protos.tensorflow_serving.apis import input_pb2
from onnx_serving.server.api.rest.json_to_tensor import decode_base64, is_base64_object, utf8
from onnx_serving.server.api.rest.rapidjson_compat import debug_string, type_name
from onnx_serving.server.errors import InvalidArgument

CONTEXT_KEY: Final = "context"
EXAMPLES_KEY: Final = "examples"
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_KIND_NAMES: Final = {
    "bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"
}


def read_examples(document: Mapping[str, Any]) -> input_pb2.Input:
    request_input = input_pb2.Input()
    if CONTEXT_KEY in document:
        listed = request_input.example_list_with_context
        _fill_example(document[CONTEXT_KEY], listed.context)
        add = listed.examples.add
    else:
        add = request_input.example_list.examples.add
    if EXAMPLES_KEY not in document:
        # TF's words, for :regress too.
        raise _format_error(
            document, f"When method is classify, key '{EXAMPLES_KEY}' is expected and was not found"
        )
    examples = document[EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise _format_error(document, f"Expecting '{EXAMPLES_KEY}' value to be an list/array")
    if not examples:
        raise _format_error(document, f"'{EXAMPLES_KEY}' value is an empty array")
    for value in examples:
        _fill_example(value, add())
    return request_input


def _format_error(document: Mapping[str, Any], message: str) -> InvalidArgument:
    return InvalidArgument(f"JSON Value: {debug_string(document)} {message}")


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {type_name(value)}")
    features = example.features.feature
    for name, content in value.items():
        feature = features[name]  # an empty list leaves it without a kind, as in TF
        feature.Clear()  # a repeated key: the last one counts
        for item in content if isinstance(content, list) else [content]:
            _add_value(item, name, feature)


def _add_value(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    """TF's AddValueToFeature: one JSON value appended to the feature's list."""
    if isinstance(value, bool):
        _kind(feature, "int64_list", name).value.append(int(value))
    elif isinstance(value, str):
        _kind(feature, "bytes_list", name).value.append(utf8(value))
    elif isinstance(value, float):
        _kind(feature, "float_list", name).value.append(value)
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            _kind(feature, "int64_list", name).value.append(value)
        elif _INT64_MAX < value <= _UINT64_MAX:
            raise InvalidArgument(
                f"Feature: {name} has uint64_t element. Only int64_t is supported."
            )
        else:  # rapidjson holds integers beyond 64 bits as doubles
            _kind(feature, "float_list", name).value.append(float(value))
    elif is_base64_object(value):
        _kind(feature, "bytes_list", name).value.append(decode_base64(value))
    else:  # null, a nested list, any other object
        raise InvalidArgument(
            f"Feature: {name} has element with unexpected JSON type: {type_name(value)}"
        )


def _kind(feature: feature_pb2.Feature, kind: str, name: str) -> Any:
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise InvalidArgument(
            f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}"
        )
    return getattr(feature, kind)
