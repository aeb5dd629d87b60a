"""Migration off TF Serving: convert SavedModel repositories to ONNX, compare two servers.

onnxruntime-extensions' library is loaded (bound now, not imported as a Python
package) before anything loads TensorFlow: TensorFlow exports its own RE2 globally,
and the extensions' regex ops bound to it later silently answer wrong (validation
would then fail correct conversions).
"""

import ctypes
import importlib.util
from pathlib import Path


def _bind_extensions_first() -> None:
    spec = importlib.util.find_spec("onnxruntime_extensions")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: string ops do not convert, the rest does
    for library in Path(spec.submodule_search_locations[0]).glob("_extensions_pydll*.so"):
        ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL | 2)  # 2: RTLD_NOW


_bind_extensions_first()
