"""The names a served model version and its clients agree on, in one place for the
server, the request log, ``onnx-serving convert`` and the tools.

The warmup file and its record limit are TF Serving's (servables/tensorflow/
saved_model_warmup_util.cc); the default signature key is TensorFlow's
DEFAULT_SERVING_SIGNATURE_DEF_KEY (saved_model/signature_constants.py);
``signatures.json`` is ours (docs/signatures.md).
"""

from __future__ import annotations

from pathlib import Path

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # records in a warmup file; a request log file holds as many
SIGNATURES_FILE = "signatures.json"
DEFAULT_MODEL_FILE = "model.onnx"  # the graph a version without signatures.json serves
DEFAULT_SIGNATURE = "serving_default"


def signature_key(requested: str) -> str:
    """The signature a request names: the default one when it names none."""
    return requested or DEFAULT_SIGNATURE
