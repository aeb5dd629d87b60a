"""``Input`` ⇄ the core's examples tensor: one DT_STRING vector of serialized tf.Example.

As TF Serving's InputToSerializedExampleTensor builds it: with a context, each
element is the context's bytes followed by the example's, so parsing merges
the two and the example's features win. Those copies are bytes the request does
not carry, so they are bounded as the values a tensor fills in are
(``MAX_FILL_BYTES``): a few kilobytes of context shared by a few thousand empty
examples would otherwise cost the server hundreds of megabytes.
"""

from __future__ import annotations

import numpy as np

from onnx_serving.codec.tensors import MAX_FILL_BYTES
from onnx_serving.protos.tensorflow_serving.apis import input_pb2
from onnx_serving.server.errors import ResourceExhausted


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        copies = len(context) * len(listed.examples)
        if copies > MAX_FILL_BYTES:
            raise ResourceExhausted(
                f"{len(listed.examples)} examples sharing a context of {len(context)} bytes "
                f"would take {copies} bytes of copies of it, over the limit of "
                f"{MAX_FILL_BYTES}: send fewer examples per request, or a smaller context"
            )
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
