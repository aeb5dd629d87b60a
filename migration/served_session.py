"""A converted model run as the server will run it, for validation against TensorFlow.

The server's own session decodes text and images and loads the custom-op library
the model needs; validating through it checks what clients will get, and
takes requests' bytes as they come (not only UTF-8).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from onnx_serving.server.errors import ServingError
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.graph import read_graph
from onnx_serving.server.runtime.images import ImageDecoding
from onnx_serving.server.runtime.session import OnnxSession


class ServedModelError(Exception):
    """The server could not load or run the converted model."""


class ServedSession:
    def __init__(self, model: Path) -> None:
        try:
            graph = read_graph(model)
            self._session = OnnxSession(model, graph, RuntimeConfig())
        except ServingError as exc:
            raise ServedModelError(exc.message) from exc
        self.decodings: Mapping[str, ImageDecoding] = graph.decodings

    def run(self, outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._session.run(feeds, outputs)
        except ServingError as exc:
            raise ServedModelError(exc.message) from exc
