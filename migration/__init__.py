"""Migration off TF Serving: convert SavedModel repositories to ONNX, compare two servers.

onnxruntime-extensions is loaded before anything imports TensorFlow: TensorFlow
exports its own RE2 globally, and a regex op of the extensions bound to it later
silently answers wrong (validation would then fail correct conversions).
"""

import contextlib

with contextlib.suppress(ImportError):  # string ops need it; the rest converts without
    import onnxruntime_extensions  # noqa: F401
