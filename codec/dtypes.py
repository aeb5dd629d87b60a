"""Element types by name, as numpy dtypes: TensorFlow's (the one table the codec, the
server's signatures and its messages read) and the Open Inference Protocol's (KServe v2),
each OIP datatype as the TF type it is. Plain numpy, no protobuf, so the server's runtime
can use it too.
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


# The Open Inference Protocol's datatypes (KServe v2, open_inference_grpc.proto) → TF's
# names: the model's ONNX and TF types are those of its signature, so this one table maps
# all three. OIP has no name for FP8 or complex types.
TF_NAME_BY_OIP: Final[dict[str, str]] = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BF16": "DT_BFLOAT16",
    "BYTES": "DT_STRING",
}

_OIP_BY_TF_NAME: Final[dict[str, str]] = {v: k for k, v in TF_NAME_BY_OIP.items()}


def oip_numpy(datatype: str) -> np.dtype | None:
    """The numpy dtype of an OIP datatype (object for BYTES), or None for an unknown name."""
    tf = TF_NAME_BY_OIP.get(datatype)
    return None if tf is None else NUMPY_BY_TF_NAME[tf]


def oip_name(dtype: np.dtype) -> str | None:
    """``FP32`` for float32 (BYTES for str, bytes and object), or None where OIP has no name."""
    return _OIP_BY_TF_NAME.get(tf_name(dtype))
