"""Request logging (``records``: what is logged, as PredictionLog; ``writer``: the files)."""

from onnx_serving.server.request_log.records import RequestLogs
from onnx_serving.server.request_log.writer import RequestLogOptions

__all__ = ["RequestLogOptions", "RequestLogs"]
