"""TensorFlow's element types by name, as numpy dtypes: the one table the codec, the
server's signatures and its messages read. Plain numpy, no protobuf, so the server's
runtime can use it too.
"""

from __future__ import annotations

from typing import Final

import ml_dtypes
import numpy as np

# TensorFlow DataType names → numpy dtypes, for every type the codec moves.
NUMPY_BY_TF_NAME: Final[dict[str, np.dtype]] = {
    "DT_FLOAT": np.dtype(np.float32),
    "DT_DOUBLE": np.dtype(np.float64),
    "DT_HALF": np.dtype(np.float16),
    "DT_BFLOAT16": np.dtype(ml_dtypes.bfloat16),
    "DT_FLOAT8_E4M3FN": np.dtype(ml_dtypes.float8_e4m3fn),
    "DT_FLOAT8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "DT_FLOAT8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "DT_FLOAT8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
    "DT_INT8": np.dtype(np.int8),
    "DT_INT16": np.dtype(np.int16),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64),
    "DT_UINT8": np.dtype(np.uint8),
    "DT_UINT16": np.dtype(np.uint16),
    "DT_UINT32": np.dtype(np.uint32),
    "DT_UINT64": np.dtype(np.uint64),
    "DT_BOOL": np.dtype(np.bool_),
    "DT_STRING": np.dtype(object),
    # ONNX Runtime runs neither; the codec moves them and messages name them.
    "DT_COMPLEX64": np.dtype(np.complex64),
    "DT_COMPLEX128": np.dtype(np.complex128),
}

_TF_NAME_BY_NUMPY: Final[dict[np.dtype, str]] = {v: k for k, v in NUMPY_BY_TF_NAME.items()}


def tf_name(dtype: np.dtype) -> str:
    """``DT_FLOAT`` for float32: messages speak TensorFlow's names to TF Serving's users."""
    if dtype.kind in "OSU":
        return "DT_STRING"
    return _TF_NAME_BY_NUMPY.get(dtype, dtype.name)
