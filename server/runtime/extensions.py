"""onnxruntime-extensions' custom ops, registered only for models that use them.

tf2onnx converts TensorFlow's string ops (``tf.strings.join``, ``regex_replace``,
``split``, ...) to onnxruntime-extensions' ops in the ``ai.onnx.contrib`` domain.
A session of a model with nodes there gets the library; other models never load it,
and a model that needs it where it is not installed fails to load, saying so.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

from onnx_serving.server.errors import ModelLoadError

DOMAINS = ("ai.onnx.contrib", "com.microsoft.extensions")


def domains_used(model: onnx.ModelProto) -> set[str]:
    """The extension domains the model's nodes (subgraphs included) are in."""
    found: set[str] = set()
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.domain in DOMAINS:
                found.add(node.domain)
            graphs += [a.g for a in node.attribute if a.HasField("g")]
            graphs += [g for a in node.attribute for g in a.graphs]
    return found


def register(options: ort.SessionOptions, file: str, domains: set[str]) -> None:
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError as exc:
        raise ModelLoadError(
            f"{file} uses onnxruntime-extensions' ops ({', '.join(sorted(domains))}), which "
            "are not installed: pip install 'onnx-serving[strings]'"
        ) from exc
    options.register_custom_ops_library(get_library_path())
