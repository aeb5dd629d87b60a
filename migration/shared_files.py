"""One ONNX file for signatures that converted to the same model.

Keras 3's ``model.export`` writes ``serve`` and ``serving_default`` over one
function; tf2onnx converts each signature on its own, so a version would hold
the weights twice (204 MB for ResNet50 instead of 102). signatures.json names
each signature's ``model_file``, so identical conversions share one file.
"""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import onnx

PREFERRED_FILE = "model.onnx"


def share_identical(staging: Path, entries: MutableMapping[str, dict[str, Any]]) -> list[str]:
    """Points signatures whose files hold the same model at one of them and deletes the rest.

    Returns the files removed. Models with external data (``--large_model``) are left
    alone: their tensors live in files that the graph names, compared here only by name.
    """
    by_digest: dict[str, list[str]] = {}
    for file in sorted({str(e["model_file"]) for e in entries.values()}):
        digest = _digest(staging / file)
        if digest is not None:
            by_digest.setdefault(digest, []).append(file)
    removed: list[str] = []
    for files in by_digest.values():
        if len(files) < 2:
            continue
        kept = PREFERRED_FILE if PREFERRED_FILE in files else files[0]
        for entry in entries.values():
            if entry["model_file"] in files:
                entry["model_file"] = kept
        for file in files:
            if file != kept:
                (staging / file).unlink()
                removed.append(file)
    return removed


def _digest(path: Path) -> str | None:
    """The model's content, less the names tf2onnx takes from the signature it converted."""
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return None
    model.graph.name = ""
    model.graph.doc_string = ""
    model.doc_string = ""
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
