"""Version states → GetModelStatusResponse: gRPC sends it, REST prints it as JSON."""

from __future__ import annotations

from onnx_serving.protos.tensorflow_serving.apis import get_model_status_pb2
from onnx_serving.server.repository.versions import VersionStatus


def status_response(
    statuses: list[VersionStatus],
) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add(version=status.version)
        entry.state = int(status.state)  # type: ignore[assignment]
        entry.status.SetInParent()
        if status.error is not None:
            entry.status.error_code = int(status.error.code)  # type: ignore[assignment]
            entry.status.error_message = status.error.message
    return response
