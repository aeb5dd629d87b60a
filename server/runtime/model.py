"""A loaded model version: its signatures and the sessions that run them."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Protocol

import numpy as np

from onnx_serving.codec.served_model import SIGNATURES_FILE
from onnx_serving.server.errors import ModelLoadError
from onnx_serving.server.runtime.config import RuntimeConfig, for_version
from onnx_serving.server.runtime.deadline import Deadline
from onnx_serving.server.runtime.graph import Graph, read_graph
from onnx_serving.server.runtime.session import OnnxSession
from onnx_serving.server.runtime.signature import (
    DEFAULT_MODEL_FILE,
    Signature,
    build_signature,
    default_signatures,
    read_signature_file,
)
from onnx_serving.server.runtime.threads import warn_if_oversubscribed

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]


class BatchQueue(Protocol):
    """Merges concurrent requests into batches (server/batching's Batcher is one)."""

    def submit(self, inputs: Mapping[str, np.ndarray], awaited: Deadline | None = None
               ) -> Outputs: ...

    def close(self) -> None: ...

    @property
    def pending(self) -> int:
        """Requests waiting for a batch: the queue depth."""
        ...


# Given a signature and how to run one batch of it (every output), a queue for it.
Batching = Callable[[Signature, Callable[[dict[str, np.ndarray]], Outputs]], BatchQueue]


class LoadedModel:
    """Everything one version directory serves. Built by ``load``; immutable after."""

    def __init__(
        self,
        signatures: Mapping[str, Signature],
        sessions: Mapping[str, OnnxSession],
        runtime: RuntimeConfig,
        batching: Batching | None = None,
    ) -> None:
        self.signatures = dict(signatures)
        self._sessions = dict(sessions)
        self.runtime = runtime
        self._queues = {
            name: batching(signature, functools.partial(self._run_all, signature))
            for name, signature in self.signatures.items()
        } if batching is not None else {}

    @property
    def providers(self) -> list[str]:
        return sorted({p for s in self._sessions.values() for p in s.providers})

    @property
    def threads(self) -> str:
        """How its sessions run: instances, threads, spinning, pools."""
        return "; ".join(sorted({s.threads.describe() for s in self._sessions.values()}))

    @property
    def batch_queue_depth(self) -> int:
        """Requests waiting in this version's batch queues."""
        return sum(queue.pending for queue in self._queues.values())

    def predict(
        self,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: Deadline | None = None,
    ) -> AbstractContextManager[Outputs]:
        """Runs on entering the block: outputs by alias, in the order asked for.
        ``signature`` is one of ours; ``inputs`` are exactly its inputs (the serving core
        checks the request's keys, in TF Serving's words, before decoding them).

        They are valid inside the block only: with IO binding they are buffers that the
        next request reuses, so the response is encoded before the block ends. The run
        is skipped if ``deadline`` has passed by the time it would start.
        """
        names, aliases = signature.selected_outputs(output_filter)
        for alias, array in inputs.items():
            signature.check_input(alias, array)
        queue = self._queues.get(signature.name)
        if queue is not None:  # batches compute every output; each caller takes its own
            if deadline is not None:
                deadline.check()
            everything = queue.submit(inputs, deadline)
            return nullcontext({alias: everything[alias] for alias in aliases})
        return self._sessions[signature.model_file].lease(
            signature.feeds(inputs), names, aliases, deadline
        )

    def close(self) -> None:
        """Before the sessions go: batch queues hold none once their requests are done."""
        for queue in self._queues.values():
            queue.close()

    def _run_all(self, signature: Signature, inputs: Mapping[str, np.ndarray]) -> Outputs:
        """One batch: its outputs are the callers' to keep, so no buffer is reused."""
        outputs = list(signature.outputs.values())
        session = self._sessions[signature.model_file]
        values = session.run(signature.feeds(inputs), [spec.name for spec in outputs])
        return {spec.alias: v for spec, v in zip(outputs, values, strict=True)}


def load(
    version_dir: Path, server_default: RuntimeConfig, batching: Batching | None = None,
    settings_dir: Path | None = None,
) -> LoadedModel:
    """Reads the signatures, then opens one session per ONNX file they use, configured by
    the server's defaults and the model's and version's runtime.json (those beside
    ``settings_dir`` when given: the version a converted copy was made from)."""
    config = for_version(server_default, settings_dir or version_dir)
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
    for file, session in sessions.items():
        warn_if_oversubscribed(session.threads, str(version_dir / file))
    return LoadedModel(signatures, sessions, config, batching)
