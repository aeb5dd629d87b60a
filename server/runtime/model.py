"""A loaded model version: its signatures and the sessions that run them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from onnx_serving.server.errors import ModelLoadError
from onnx_serving.server.runtime.config import RuntimeConfig, for_version
from onnx_serving.server.runtime.graph import Graph, read_graph
from onnx_serving.server.runtime.session import OnnxSession
from onnx_serving.server.runtime.signature import (
    DEFAULT_MODEL_FILE,
    SIGNATURES_FILE,
    Signature,
    build_signature,
    default_signatures,
    read_signature_file,
)

log = logging.getLogger(__name__)


class LoadedModel:
    """Everything one version directory serves. Built by ``load``; immutable after."""

    def __init__(
        self,
        signatures: Mapping[str, Signature],
        sessions: Mapping[str, OnnxSession],
        runtime: RuntimeConfig,
    ) -> None:
        self.signatures = dict(signatures)
        self._sessions = dict(sessions)
        self.runtime = runtime

    @property
    def providers(self) -> list[str]:
        return sorted({p for s in self._sessions.values() for p in s.providers})

    def predict(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Outputs by alias, in the order asked for. ``signature`` is one of ours."""
        signature.check_input_keys(inputs.keys())
        outputs = signature.select_outputs(output_filter)
        for alias, array in inputs.items():
            signature.check_input(alias, array)
        feeds = {signature.inputs[alias].name: array for alias, array in inputs.items()}
        session = self._sessions[signature.model_file]
        values = session.run(feeds, [spec.name for spec in outputs])
        return {spec.alias: v for spec, v in zip(outputs, values, strict=True)}


def load(version_dir: Path, server_default: RuntimeConfig) -> LoadedModel:
    """Reads the signatures, then opens one session per ONNX file they use, configured by
    the server's defaults and the model's and version's runtime.json."""
    config = for_version(server_default, version_dir)
    graphs: dict[str, Graph] = {}

    def graph(model_file: str) -> Graph:
        if model_file not in graphs:
            path = version_dir / model_file
            if path.parent != version_dir or not path.is_file():
                raise ModelLoadError(f"{version_dir} has no model file {model_file}")
            graphs[model_file] = read_graph(path)
        return graphs[model_file]

    signature_path = version_dir / SIGNATURES_FILE
    if signature_path.exists():
        signatures = {
            name: build_signature(
                name, entry, graph(entry.get("model_file", DEFAULT_MODEL_FILE)), signature_path
            )
            for name, entry in read_signature_file(signature_path).items()
        }
    else:
        signatures = default_signatures(graph(DEFAULT_MODEL_FILE))
    sessions = {file: OnnxSession(version_dir / file, graphs[file], config) for file in graphs}
    return LoadedModel(signatures, sessions, config)
