"""One tuple of ONNX Runtime's exceptions, shared by the server and the migration tools."""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as binding

from onnx_serving.migration import convert
from onnx_serving.server.runtime import session
from onnx_serving.server.runtime.ort_errors import ORT_ERRORS


def test_every_exception_class_of_the_binding_is_caught() -> None:
    exposed = {
        value for value in vars(binding).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert binding.EPFail in exposed
    assert set(ORT_ERRORS) == exposed
    assert session.ORT_ERRORS is ORT_ERRORS and convert.ORT_ERRORS is ORT_ERRORS
