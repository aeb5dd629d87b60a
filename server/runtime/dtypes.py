"""Element types as ONNX, ONNX Runtime, numpy and TensorFlow's signatures name them.

ONNX Runtime's Python API has no numpy type for bfloat16 and the float8
types; ``ml_dtypes`` supplies them, and ``session.py`` moves such tensors as
raw bits.
"""

from __future__ import annotations

from typing import Final

import ml_dtypes
import numpy as np
from onnx import TensorProto as OnnxType

# ONNX element type → numpy dtype, for every type ONNX Runtime's CPU build runs.
NUMPY_BY_ONNX: Final[dict[int, np.dtype]] = {
    OnnxType.FLOAT: np.dtype(np.float32),
    OnnxType.DOUBLE: np.dtype(np.float64),
    OnnxType.FLOAT16: np.dtype(np.float16),
    OnnxType.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    OnnxType.FLOAT8E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    OnnxType.FLOAT8E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    OnnxType.FLOAT8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    OnnxType.FLOAT8E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    OnnxType.INT8: np.dtype(np.int8),
    OnnxType.INT16: np.dtype(np.int16),
    OnnxType.INT32: np.dtype(np.int32),
    OnnxType.INT64: np.dtype(np.int64),
    OnnxType.UINT8: np.dtype(np.uint8),
    OnnxType.UINT16: np.dtype(np.uint16),
    OnnxType.UINT32: np.dtype(np.uint32),
    OnnxType.UINT64: np.dtype(np.uint64),
    OnnxType.BOOL: np.dtype(np.bool_),
    OnnxType.STRING: np.dtype(object),
}

# Types ONNX Runtime's Python API cannot take or give as numpy arrays.
RAW_BITS: Final[dict[np.dtype, np.dtype]] = {
    dtype: np.dtype(f"uint{dtype.itemsize * 8}")
    for dtype in NUMPY_BY_ONNX.values()
    if dtype.type.__module__.startswith("ml_dtypes")
}
ONNX_BY_NUMPY: Final[dict[np.dtype, int]] = {v: k for k, v in NUMPY_BY_ONNX.items()}

# TensorFlow DataType names, as signature files spell dtypes.
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
    # Not run by ONNX Runtime, named only so messages say what came.
    "DT_COMPLEX64": np.dtype(np.complex64),
    "DT_COMPLEX128": np.dtype(np.complex128),
}


_TF_NAME_BY_NUMPY: Final[dict[np.dtype, str]] = {v: k for k, v in NUMPY_BY_TF_NAME.items()}


def tf_name(dtype: np.dtype) -> str:
    """``DT_FLOAT`` for float32: messages speak TensorFlow's names to TF Serving's users."""
    if dtype.kind in "OSU":
        return "DT_STRING"
    return _TF_NAME_BY_NUMPY.get(dtype, dtype.name)
