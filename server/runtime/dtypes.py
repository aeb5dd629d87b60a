"""Element types as ONNX and ONNX Runtime name them, as numpy dtypes.

TensorFlow's names for them are ``onnx_serving.codec.dtypes``'s.

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
