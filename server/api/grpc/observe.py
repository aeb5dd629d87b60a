"""Request metrics and the access log for every model RPC, as one server interceptor.

TF Serving counts Predict, Classify, Regress and MultiInference by model and
status, and times the successful ones; the access log (off unless asked for)
writes one line per such request. Both read the final status from the call's
context, so they see exactly what the client got.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from onnx_serving.server.errors import Code
from onnx_serving.server.metrics import GRPC, Metrics

access_log = logging.getLogger("onnx_serving.access")

def _spec_name(request: Any) -> str:
    return str(request.model_spec.name)


def _first_task_name(request: Any) -> str:
    """MultiInference names its model per task."""
    return str(request.tasks[0].model_spec.name) if request.tasks else ""


def _oip_name(request: Any) -> str:
    return str(request.model_name)


# The model RPCs observed, by method path: the API each is counted as, and where its
# request names the model.
_OBSERVED: dict[str, tuple[str, Callable[[Any], str]]] = {
    **{f"/tensorflow.serving.PredictionService/{api}": (api, _spec_name)
       for api in ("Predict", "Classify", "Regress")},
    "/tensorflow.serving.PredictionService/MultiInference": ("MultiInference", _first_task_name),
    "/inference.GRPCInferenceService/ModelInfer": ("ModelInfer", _oip_name),  # api/oip/
}


def model_of(method: str) -> Callable[[Any], str] | None:
    """Where a model RPC's request (by method path) names its model; None for others."""
    observed_as = _OBSERVED.get(method)
    return None if observed_as is None else observed_as[1]


class ObserveRequests(grpc.ServerInterceptor):
    def __init__(self, metrics: Metrics, *, access_log_enabled: bool = False) -> None:
        self._metrics = metrics
        self._access_log = access_log_enabled
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler | None, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method  # type: ignore[attr-defined]
        # gRPC asks on every call; a registered method's handler is the same each time.
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler | None
    ) -> grpc.RpcMethodHandler | None:
        """``handler`` of ``method``, observed if it is a model RPC."""
        observed_as = _OBSERVED.get(method)
        if handler is None or observed_as is None:
            return handler
        api, model_name = observed_as
        behavior = handler.unary_unary

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            response = None
            try:
                response = behavior(request, context)
                return response
            finally:
                self._record(api, model_name(request), request, response, context,
                             time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _record(
        self, api: str, model: str, request: Any, response: Any, context: grpc.ServicerContext,
        seconds: float,
    ) -> None:
        code = context.code()  # type: ignore[attr-defined]
        status = Code(code.value[0]) if code is not None else Code.OK
        self._metrics.request(model, api, GRPC, status, seconds)
        if self._access_log:
            spec = getattr(response, "model_spec", None)
            version = spec.version.value if spec is not None else \
                getattr(response, "model_version", "")
            signature = getattr(getattr(request, "model_spec", None), "signature_name", "")
            access_log.info("grpc %s model=%s version=%s signature=%s status=%s ms=%.2f",
                            api, model, version, signature, status.name, seconds * 1000)
