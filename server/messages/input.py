"""``Input`` ⇄ the core's examples tensor: one DT_STRING vector of serialized tf.Example.

As TF Serving's InputToSerializedExampleTensor builds it: with a context, each
element is the context's bytes followed by the example's, so parsing merges
the two and the example's features win.
"""

from __future__ import annotations

import numpy as np

from onnx_serving.protos.tensorflow_serving.apis import input_pb2


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    examples = np.empty(len(serialized), dtype=object)
    examples[:] = serialized
    return examples


def fill_input(request_input: input_pb2.Input, examples: np.ndarray) -> None:
    """The examples as the model got them (a context already merged into each): what the
    request log records."""
    for serialized in examples.reshape(-1):
        request_input.example_list.examples.add().MergeFromString(bytes(serialized))
