"""A gRPC call's deadline and cancellation, as the core's transport-neutral ``Deadline``."""

from __future__ import annotations

import grpc

from onnx_serving.server.runtime.deadline import Deadline


def call_deadline(context: grpc.ServicerContext) -> Deadline:
    """The client's deadline (none if it set none); the call ending (cancelled, timed out,
    or answered) marks its caller gone, which stops a run still in progress."""
    deadline = Deadline(context.time_remaining())
    if not context.add_callback(deadline.leave):  # already over
        deadline.leave()
    return deadline
