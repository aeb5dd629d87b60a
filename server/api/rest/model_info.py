"""GET /v1/models/...: version status and metadata, as TF Serving prints their protos in JSON.

TF prints both with proto3 JSON, fields without presence included, int64 as
strings and (for metadata) proto field names; metadata is the model spec
and the unpacked SignatureDefMap side by side (http_rest_api_util.cc
ToJsonString). The same protos as gRPC's are built and printed here.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from onnx_serving.codec.model_spec import fill_spec
from onnx_serving.protos.tensorflow_serving.apis import model_pb2
from onnx_serving.server.messages.status import status_response
from onnx_serving.server.repository.versions import VersionStatus
from onnx_serving.server.serving.core import ModelMetadata
from onnx_serving.server.serving.signature_def import SIGNATURE_DEF, signature_def_map


def status_json(statuses: list[VersionStatus]) -> str:
    return json.dumps(_as_dict(status_response(statuses)), indent=1, ensure_ascii=False)


def metadata_json(metadata: ModelMetadata) -> str:
    spec = model_pb2.ModelSpec()
    fill_spec(spec, metadata.name, version=metadata.version)
    document = {
        "model_spec": _as_dict(spec),
        "metadata": {SIGNATURE_DEF: _as_dict(signature_def_map(metadata.signatures))},
    }
    return json.dumps(document, indent=1, ensure_ascii=False)


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
