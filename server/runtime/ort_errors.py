"""Every exception class ONNX Runtime's binding raises, as one tuple to catch.

They share no base but ``Exception``, and new releases add classes (EPFail,
ModelRequiresCompilation, ...): naming them one by one misses the new ones,
so the tuple is read from the binding itself.
"""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as _binding

ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    value for value in vars(_binding).values()
    if isinstance(value, type) and issubclass(value, Exception)
    and value.__module__ == _binding.__name__
)
