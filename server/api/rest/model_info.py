"""GET /v1/models/...: version status and metadata, as TF Serving prints their protos in JSON.

TF prints both with proto3 JSON, fields without presence included, int64 as
strings and (for metadata) proto field names; metadata is the model spec
and the unpacked SignatureDefMap side by side (http_rest_api_util.cc
ToJsonString). The same protos as gRPC's are built and printed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from onnx_serving.protos.tensorflow_serving.apis import model_pb2
from onnx_serving.server.api.grpc.model_service import status_response
from onnx_serving.server.api.grpc.model_spec import fill_spec
from onnx_serving.server.api.grpc.prediction_service import SIGNATURE_DEF, signature_def_map
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.runtime.model import LoadedModel
from onnx_serving.server.runtime.signature import Signature


def status_json(manager: ModelManager[LoadedModel], name: str, version: int | None) -> str:
    """Every version's state, or one version's; a label is ignored, as in TF."""
    response = status_response(manager, name, version)
    return json.dumps(_as_dict(response), indent=1, ensure_ascii=False)


def metadata_json(name: str, version: int, signatures: Mapping[str, Signature]) -> str:
    spec = model_pb2.ModelSpec()
    fill_spec(spec, name, version)
    document = {
        "model_spec": _as_dict(spec),
        "metadata": {SIGNATURE_DEF: _as_dict(signature_def_map(signatures))},
    }
    return json.dumps(document, indent=1, ensure_ascii=False)


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
