"""The Open Inference Protocol (KServe v2) against the real server, on gRPC and REST.

The clients here are the stubs generated from the protocol's own .proto and the
standard library's HTTP client, speaking the wire formats as tritonclient does (raw
contents on gRPC; JSON and the binary data extension on REST), for what tritonclient
cannot send (typed contents, malformed bodies). tritonclient itself, which needs an
older protobuf than the server's, runs in its own environment: tests/test_oip_tritonclient.py.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from onnx import TensorProto

from onnx_serving.codec.oip import from_raw, to_raw
from onnx_serving.codec.tensors import make_ndarray, make_tensor_proto
from onnx_serving.protos.inference import open_inference_grpc_pb2 as pb
from onnx_serving.protos.inference import open_inference_grpc_pb2_grpc as pb_grpc
from onnx_serving.protos.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tests.models import EXAMPLES, _write, add_constant, identity, two_outputs
from tests.server_process import ServerProcess, free_port
from tests.test_lifecycle import config_text, publish, start_server

# OIP datatype, ONNX type, numpy dtype, sample values (edges of each type's range).
DATATYPES: list[tuple[str, int, Any, list[Any]]] = [
    ("BOOL", TensorProto.BOOL, np.bool_, [True, False, True, True]),
    ("UINT8", TensorProto.UINT8, np.uint8, [0, 1, 200, 255]),
    ("UINT16", TensorProto.UINT16, np.uint16, [0, 1, 40000, 65535]),
    ("UINT32", TensorProto.UINT32, np.uint32, [0, 1, 3_000_000_000, 2**32 - 1]),
    ("UINT64", TensorProto.UINT64, np.uint64, [0, 1, 2**63, 2**64 - 1]),
    ("INT8", TensorProto.INT8, np.int8, [-128, -1, 0, 127]),
    ("INT16", TensorProto.INT16, np.int16, [-32768, -1, 0, 32767]),
    ("INT32", TensorProto.INT32, np.int32, [-(2**31), -1, 0, 2**31 - 1]),
    ("INT64", TensorProto.INT64, np.int64, [-(2**63), -1, 0, 2**63 - 1]),
    ("FP16", TensorProto.FLOAT16, np.float16, [-1.5, 0.0, 0.333, 65504.0]),
    ("FP32", TensorProto.FLOAT, np.float32, [-1.5, 0.0, 1e-30, 3.4e38]),
    ("FP64", TensorProto.DOUBLE, np.float64, [-1.5, 0.0, 1e-300, 1.7e308]),
    ("BF16", TensorProto.BFLOAT16, ml_dtypes.bfloat16, [-1.5, 0.0, 0.333, 3.0e38]),
    ("BYTES", TensorProto.STRING, object, [b"", b"caf\xc3\xa9", b"\xe2\x82\xac\x01", b"x" * 300]),
]
TYPED = {"BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
         "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
         "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
         "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
SHAPE = [2, 2]


def _array(numpy: Any, values: list[Any]) -> np.ndarray:
    if numpy is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(SHAPE)
    return np.array(values, dtype=numpy).reshape(SHAPE)


@pytest.fixture(scope="module")
def oip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("oip")
    shutil.copytree(EXAMPLES / "models" / "half_plus_two", root / "half_plus_two")
    for datatype, onnx_type, _, _ in DATATYPES:
        _write(root / f"id_{datatype.lower()}" / "1", {"model.onnx": identity(onnx_type)}, None)
    for version in (1, 2, 3):
        _write(root / "versions" / str(version), {"model.onnx": add_constant(version)}, None)
    _write(root / "two" / "1", {"model.onnx": two_outputs()}, None)
    models = "\n".join(
        f'config {{ name: "{name}" base_path: "{root / name}" model_platform: "onnx" }}'
        for name in ["half_plus_two", "two", *(f"id_{d.lower()}" for d, *_ in DATATYPES)]
    )
    config = root / "models.config"
    config.write_text(f"""model_config_list {{
{models}
config {{ name: "versions" base_path: "{root / 'versions'}" model_platform: "onnx"
  model_version_policy {{ all {{}} }} version_labels {{ key: "canary" value: 2 }} }}
}}""")
    monitoring = root / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    process = ServerProcess(
        [f"--model_config_file={config}", f"--rest_api_port={rest_port}",
         "--enable_grpc_healthcheck_service", f"--monitoring_config_file={monitoring}",
         "--rest_api_enable_cors_support"],
        tmp_path_factory.mktemp("logs") / "server.log",
    ).start()
    process.rest_port = rest_port  # type: ignore[attr-defined]
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(oip_server: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with oip_server.channel() as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def http(server: ServerProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}{path}",  # type: ignore[attr-defined]
        data=body, method=method, headers=headers or {},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def http_json(server: ServerProcess, method: str, path: str, document: Any = None
              ) -> tuple[int, Any]:
    body = None if document is None else json.dumps(document).encode()
    status, _, data = http(server, method, path, body)
    return status, json.loads(data) if data else None


def raw_infer(model: str, array: np.ndarray, datatype: str, version: str = "",
              name: str = "input") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version, id="req-1")
    request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
    request.raw_input_contents.append(to_raw(array))
    return request


def binary_infer(inputs: list[tuple[str, str, np.ndarray]], *, binary_output: bool
                 ) -> tuple[bytes, dict[str, str]]:
    """A request in the binary data extension's form, as tritonclient's http client sends it."""
    tail = [to_raw(array) for _, _, array in inputs]
    header = json.dumps({
        "inputs": [{"name": n, "datatype": d, "shape": list(a.shape),
                    "parameters": {"binary_data_size": len(raw)}}
                   for (n, d, a), raw in zip(inputs, tail, strict=True)],
        "parameters": {"binary_data_output": binary_output},
    }).encode()
    return header + b"".join(tail), {"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"}


def read_binary_answer(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any],
                                                                     dict[str, bytes]]:
    size = int(headers.get("inference-header-content-length")
               or headers.get("Inference-Header-Content-Length") or len(body))
    document = json.loads(body[:size])
    blobs, offset = {}, size
    for output in document["outputs"]:
        length = output.get("parameters", {}).get("binary_data_size")
        if length is not None:
            blobs[output["name"]] = body[offset:offset + length]
            offset += length
    assert offset == len(body)
    return document, blobs


# --- gRPC ---------------------------------------------------------------------------------


def test_grpc_server_live_ready_and_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert metadata.name == "onnx-serving"
    assert metadata.version
    assert "binary_tensor_data" in metadata.extensions


def test_grpc_model_ready_by_version_and_label(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ModelReady(pb.ModelReadyRequest(name="half_plus_two")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="versions", version="2")).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="versions", version="canary")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="versions", version="9")).ready
    assert not stub.ModelReady(pb.ModelReadyRequest(name="no_such_model")).ready


def test_grpc_model_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="half_plus_two"))
    assert metadata.name == "half_plus_two"
    assert list(metadata.versions) == ["123"]
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("y", "FP32", [-1, 1])]
    versions = stub.ModelMetadata(pb.ModelMetadataRequest(name="versions"))
    assert list(versions.versions) == ["3", "2", "1"]
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelMetadata(pb.ModelMetadataRequest(name="no_such_model"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("datatype", "onnx_type", "numpy", "values"), DATATYPES,
                         ids=[d[0] for d in DATATYPES])
def test_grpc_raw_round_trip(stub: pb_grpc.GRPCInferenceServiceStub, datatype: str,
                             onnx_type: int, numpy: Any, values: list[Any]) -> None:
    array = _array(numpy, values)
    response = stub.ModelInfer(raw_infer(f"id_{datatype.lower()}", array, datatype))
    assert (response.model_name, response.model_version, response.id) == (
        f"id_{datatype.lower()}", "1", "req-1")
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output", datatype, SHAPE)
    got = from_raw(response.raw_output_contents[0], array.dtype, SHAPE)
    assert got.dtype == array.dtype
    assert got.tolist() == array.tolist()


@pytest.mark.parametrize("datatype", list(TYPED))
def test_grpc_typed_round_trip(stub: pb_grpc.GRPCInferenceServiceStub, datatype: str) -> None:
    _, _, numpy, values = next(d for d in DATATYPES if d[0] == datatype)
    array = _array(numpy, values)
    request = pb.ModelInferRequest(model_name=f"id_{datatype.lower()}")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=SHAPE)
    getattr(tensor.contents, TYPED[datatype]).extend(array.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents  # a typed request gets a typed answer
    [output] = response.outputs
    assert output.datatype == datatype
    got = list(getattr(output.contents, TYPED[datatype]))
    assert np.array(got, dtype=numpy).tolist() == array.reshape(-1).tolist()


def test_grpc_requested_outputs_and_version_and_label(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    x = np.array([[1.0], [2.0]], np.float32)
    for version, added in (("", 3), ("1", 1), ("canary", 2)):
        request = raw_infer("versions", x, "FP32", version, name="x")
        request.outputs.add(name="y")
        response = stub.ModelInfer(request)
        assert response.model_version == str(added)
        assert from_raw(response.raw_output_contents[0], np.dtype(np.float32), [2, 1]
                        ).tolist() == (x + added).tolist()


@pytest.mark.parametrize(("request_", "code", "words"), [
    (raw_infer("no_such_model", np.zeros([1, 1], np.float32), "FP32", name="x"),
     grpc.StatusCode.NOT_FOUND, "no_such_model"),
    (raw_infer("versions", np.zeros([1, 1], np.float32), "FP32", "9", name="x"),
     grpc.StatusCode.NOT_FOUND, "versions"),
    (raw_infer("versions", np.zeros([1, 1], np.float64), "FP64", name="x"),
     grpc.StatusCode.INVALID_ARGUMENT, "datatype FP64, but the model expects FP32"),
    (raw_infer("versions", np.zeros([3], np.float32), "FP32", name="x"),
     grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    (raw_infer("versions", np.zeros([1, 1], np.float32), "FP32", name="nope"),
     grpc.StatusCode.INVALID_ARGUMENT, "nope"),
    (raw_infer("versions", np.zeros([1, 1], np.float32), "FLOAT", name="x"),
     grpc.StatusCode.INVALID_ARGUMENT, "unknown datatype"),
], ids=["unknown-model", "unknown-version", "datatype", "shape", "input-name", "bad-type"])
def test_grpc_errors(stub: pb_grpc.GRPCInferenceServiceStub, request_: pb.ModelInferRequest,
                     code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request_)
    assert error.value.code() == code
    assert words in error.value.details()


def _shaped(request: pb.ModelInferRequest, shape: list[int]) -> pb.ModelInferRequest:
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend(shape)
    return request


def typed_infer(values: list[float], shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="versions")
    request.inputs.add(name="x", datatype="FP32", shape=shape).contents.fp32_contents.extend(
        values)
    return request


UNINDEXABLE = [0, 2**62, 2**62]  # no elements, but numpy cannot index the others


@pytest.mark.parametrize(("request_", "words"), [
    (_shaped(raw_infer("versions", np.zeros([0], np.float32), "FP32", name="x"), UNINDEXABLE),
     "past what can be indexed"),
    (typed_infer([], UNINDEXABLE), "past what can be indexed"),
    (_shaped(raw_infer("versions", np.zeros([1], np.float32), "FP32", name="x"), [1] * 65),
     "65 dimensions; at most 64"),
    (typed_infer([1.0], [1] * 65), "65 dimensions; at most 64"),
], ids=["raw-empty-unindexable", "typed-empty-unindexable", "raw-rank-65", "typed-rank-65"])
def test_grpc_shapes_numpy_cannot_hold(stub: pb_grpc.GRPCInferenceServiceStub,
                                       request_: pb.ModelInferRequest, words: str) -> None:
    """Refused as the client's fault, as TF Serving's API refuses them, not as INTERNAL."""
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request_)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in error.value.details()


def test_grpc_typed_nan_is_a_float_like_any_other(
        stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """NaN in fp32_contents reaches the model as it does in raw contents or over REST."""
    response = stub.ModelInfer(typed_infer([2.0, float("nan")], [2, 1]))
    y = response.outputs[0].contents.fp32_contents
    assert y[0] == 2.0 + int(response.model_version)  # each version adds its number
    assert np.isnan(y[1])


def test_grpc_raw_size_mismatch_and_fp16_typed(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = raw_infer("id_fp32", np.zeros([2, 2], np.float32), "FP32")
    request.raw_input_contents[0] = b"\0" * 12
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "12 bytes" in error.value.details()
    typed = pb.ModelInferRequest(model_name="id_fp16")
    typed.inputs.add(name="input", datatype="FP16", shape=[1]).contents.fp32_contents.append(1)
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(typed)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only raw_input_contents" in error.value.details()


def test_grpc_health_and_reflection_name_the_service(oip_server: ServerProcess) -> None:
    with oip_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        asked = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        answer = health.Check(asked)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [reply] = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in reply.list_services_response.service}
        assert "inference.GRPCInferenceService" in names
        [reply] = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService")]))
        assert reply.file_descriptor_response.file_descriptor_proto


def test_tf_serving_predict_and_v2_infer_answer_the_same(
    oip_server: ServerProcess, stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    x = np.array([[1.0], [2.5], [-4.0]], np.float32)
    predict = predict_pb2.PredictRequest()
    predict.model_spec.name = "half_plus_two"
    predict.inputs["x"].CopyFrom(make_tensor_proto(x))
    with oip_server.channel() as channel:
        tf = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict)
    tf_y = make_ndarray(tf.outputs["y"])
    v2 = stub.ModelInfer(raw_infer("half_plus_two", x, "FP32", name="x"))
    grpc_y = from_raw(v2.raw_output_contents[0], np.dtype(np.float32), list(v2.outputs[0].shape))
    status, rest = http_json(oip_server, "POST", "/v2/models/half_plus_two/infer", {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": x.tolist()}]})
    assert status == 200
    assert tf_y.tolist() == grpc_y.tolist() == np.array(rest["outputs"][0]["data"],
                                                        np.float32).reshape(3, 1).tolist()
    assert str(tf.model_spec.version.value) == v2.model_version == rest["model_version"]


# --- REST ---------------------------------------------------------------------------------


def test_rest_server_endpoints(oip_server: ServerProcess) -> None:
    status, document = http_json(oip_server, "GET", "/v2")
    assert status == 200
    assert document["name"] == "onnx-serving"
    assert "binary_tensor_data" in document["extensions"]
    assert http_json(oip_server, "GET", "/v2/health/live") == (200, {"live": True})
    assert http_json(oip_server, "GET", "/v2/health/ready") == (200, {"ready": True})


def test_rest_model_endpoints(oip_server: ServerProcess) -> None:
    status, metadata = http_json(oip_server, "GET", "/v2/models/versions")
    assert status == 200
    assert metadata["versions"] == ["3", "2", "1"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    assert http_json(oip_server, "GET", "/v2/models/versions/versions/canary")[0] == 200
    assert http_json(oip_server, "GET", "/v2/models/versions/versions/2/ready") == (
        200, {"name": "versions", "ready": True})
    assert http_json(oip_server, "GET", "/v2/models/versions/ready")[0] == 200
    assert http_json(oip_server, "GET", "/v2/models/versions/versions/9/ready") == (
        400, {"name": "versions", "ready": False})
    status, error = http_json(oip_server, "GET", "/v2/models/no_such_model")
    assert status == 404
    assert "no_such_model" in error["error"]


@pytest.mark.parametrize(("datatype", "onnx_type", "numpy", "values"), DATATYPES,
                         ids=[d[0] for d in DATATYPES])
def test_rest_json_round_trip(oip_server: ServerProcess, datatype: str, onnx_type: int,
                              numpy: Any, values: list[Any]) -> None:
    array = _array(numpy, values)
    if datatype == "BYTES":
        data: Any = [[v.decode() for v in row] for row in array]
    else:
        data = array.astype(np.float64).tolist() if datatype == "BF16" else array.tolist()
    status, answer = http_json(oip_server, "POST", f"/v2/models/id_{datatype.lower()}/infer", {
        "id": "abc", "inputs": [{"name": "input", "datatype": datatype, "shape": SHAPE,
                                 "data": data}]})
    assert status == 200, answer
    assert answer["id"] == "abc"
    [output] = answer["outputs"]
    assert (output["datatype"], output["shape"]) == (datatype, SHAPE)
    if datatype == "BYTES":
        assert [v.encode() for v in output["data"]] == array.reshape(-1).tolist()
    else:
        assert np.array(output["data"], dtype=numpy).tolist() == array.reshape(-1).tolist()


@pytest.mark.parametrize(("datatype", "onnx_type", "numpy", "values"), DATATYPES,
                         ids=[d[0] for d in DATATYPES])
def test_rest_binary_round_trip(oip_server: ServerProcess, datatype: str, onnx_type: int,
                                numpy: Any, values: list[Any]) -> None:
    array = _array(numpy, values)
    body, headers = binary_infer([("input", datatype, array)], binary_output=True)
    status, answer_headers, data = http(
        oip_server, "POST", f"/v2/models/id_{datatype.lower()}/infer", body, headers)
    assert status == 200, data
    document, blobs = read_binary_answer(answer_headers, data)
    assert document["outputs"][0]["datatype"] == datatype
    assert from_raw(blobs["output"], array.dtype, SHAPE).tolist() == array.tolist()


def test_non_utf8_bytes_refused_as_for_tf_serving(
    oip_server: ServerProcess, stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    """The wire carries any bytes (tests/test_codec_oip.py); an ONNX Runtime string tensor
    holds text, so a non-UTF-8 element is refused as TF Serving's API refuses it."""
    array = _array(object, [b"\xff", b"ok", b"\x00\x80", b""])
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(raw_infer("id_bytes", array, "BYTES"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in error.value.details()
    body, headers = binary_infer([("input", "BYTES", array)], binary_output=False)
    status, _, data = http(oip_server, "POST", "/v2/models/id_bytes/infer", body, headers)
    assert status == 400
    assert "UTF-8" in json.loads(data)["error"]


def test_rest_version_label_and_requested_binary_output(oip_server: ServerProcess) -> None:
    x = [[1.0], [2.0]]
    for path, added in (("/v2/models/versions/infer", 3),
                        ("/v2/models/versions/versions/1/infer", 1),
                        ("/v2/models/versions/versions/canary/infer", 2)):
        status, answer = http_json(oip_server, "POST", path, {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": x}],
            "outputs": [{"name": "y"}]})
        assert status == 200, answer
        assert answer["model_version"] == str(added)
        assert answer["outputs"][0]["data"] == [1.0 + added, 2.0 + added]
    body = json.dumps({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1], "data": x}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    status, headers, data = http(oip_server, "POST", "/v2/models/versions/infer", body)
    document, blobs = read_binary_answer(headers, data)
    assert document["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert struct.unpack("<2f", blobs["y"]) == (4.0, 5.0)


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/v2/models/no_such_model/infer",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]},
     404, "no_such_model"),
    ("/v2/models/versions/infer",
     {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 1], "data": [1]}]},
     400, "datatype INT32, but the model expects FP32"),
    ("/v2/models/versions/infer",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]},
     400, "shape"),
    ("/v2/models/versions/infer",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1, 2]}]},
     400, "needs 1"),
    ("/v2/models/versions/infer",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": ["a"]}]},
     400, "not FP32"),
    ("/v2/models/versions/infer", b"{not json", 400, "not valid JSON"),
    ("/v2/models/versions/infer", {"outputs": []}, 400, "'inputs'"),
    ("/v2/nowhere", {}, 404, "/v2/nowhere"),
    ("/v2/models/versions/infer",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": UNINDEXABLE, "data": []}]},
     400, "past what can be indexed"),
    ("/v2/models/versions/infer",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 65, "data": [1]}]},
     400, "65 dimensions; at most 64"),
    ("/v2/models/versions/infer",
     {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [10**400]}]},
     400, "out of range for FP32"),
    ("/v2/models/versions/infer", b'{"inputs": [{"name": "x", "datatype": "FP32", '
     b'"shape": [1, 1], "data": ' + b"[" * 990 + b"1" + b"]" * 990 + b"}]}",
     400, "nested deeper than 64 lists"),
    ("/v2/models/versions/infer", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     400, "nested too deeply"),
], ids=["unknown-model", "datatype", "shape", "count", "value", "bad-json", "no-inputs",
        "path", "empty-unindexable", "rank-65", "integer-past-double", "data-990-deep",
        "body-100000-deep"])
def test_rest_errors(oip_server: ServerProcess, path: str, body: Any, status: int,
                     words: str) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, _, answer = http(oip_server, "POST", path, data,
                                {"Content-Type": "application/json"})
    assert got == status
    assert words in json.loads(answer)["error"]


def test_rest_cors_as_for_v1(oip_server: ServerProcess) -> None:
    status, headers, _ = http(oip_server, "OPTIONS", "/v2/models/versions/infer",
                              headers={"Origin": "https://example.com"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"
    status, headers, _ = http(oip_server, "GET", "/v2/models/versions")
    assert headers["access-control-allow-origin"] == "*"


def test_rest_bad_binary_header(oip_server: ServerProcess) -> None:
    array = np.zeros([2, 2], np.float32)
    body, headers = binary_infer([("input", "FP32", array)], binary_output=False)
    headers["Inference-Header-Content-Length"] = str(len(body) + 1)
    status, _, answer = http(oip_server, "POST", "/v2/models/id_fp32/infer", body, headers)
    assert status == 400
    assert "Inference-Header-Content-Length" in json.loads(answer)["error"]
    body, headers = binary_infer([("input", "FP32", array)], binary_output=False)
    status, _, answer = http(oip_server, "POST", "/v2/models/id_fp32/infer", body + b"xx",
                             headers)
    assert status == 400
    assert "named by no input" in json.loads(answer)["error"]
    # A digit to str.isdigit, not to int(): still the client's fault.
    body, headers = binary_infer([("input", "FP32", array)], binary_output=False)
    headers["Inference-Header-Content-Length"] = "\u00b2"  # superscript two, sent as latin-1
    status, _, answer = http(oip_server, "POST", "/v2/models/id_fp32/infer", body, headers)
    assert status == 400
    assert "Inference-Header-Content-Length" in json.loads(answer)["error"]


def test_rest_gzip_bodies_as_for_v1(oip_server: ServerProcess) -> None:
    """Content-Encoding gzip is inflated as on /v1 (tritonclient's
    request_compression_algorithm); the header length counts the inflated header."""
    x = np.array([[1.0], [2.0]], np.float32)
    body, headers = binary_infer([("x", "FP32", x)], binary_output=False)
    status, _, data = http(oip_server, "POST", "/v2/models/versions/versions/1/infer",
                           gzip.compress(body), {**headers, "Content-Encoding": "gzip"})
    assert status == 200, data
    assert json.loads(data)["outputs"][0]["data"] == [2.0, 3.0]
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1],
                            "data": x.tolist()}]}
    status, _, data = http(oip_server, "POST", "/v2/models/versions/versions/2/infer",
                           gzip.compress(json.dumps(document).encode()),
                           {"Content-Encoding": "gzip"})
    assert status == 200, data
    assert json.loads(data)["outputs"][0]["data"] == [3.0, 4.0]
    status, _, data = http(oip_server, "POST", "/v2/models/versions/infer",
                           gzip.compress(json.dumps(document).encode())[:-6],
                           {"Content-Encoding": "gzip"})
    assert status == 400
    assert "Cannot inflate the gzip request body" in json.loads(data)["error"]


def test_counted_in_the_request_metrics(oip_server: ServerProcess,
                                        stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    """v2 requests are counted as TF Serving's are, by model and status, per transport."""
    x = np.array([[1.0]], np.float32)
    stub.ModelInfer(raw_infer("versions", x, "FP32", "1", name="x"))
    http_json(oip_server, "POST", "/v2/models/versions/versions/1/infer", {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [[1.0]]}]})
    status, _, text = http(oip_server, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    lines = text.decode().splitlines()
    for api, entrypoint in (("ModelInfer", "GRPC"), ("infer", "REST")):
        assert any(f'API="{api}"' in line and f'entrypoint="{entrypoint}"' in line
                   for line in lines), (api, entrypoint)
    assert any(line.startswith(":tensorflow:serving:request_count") and 'model_name="versions"'
               in line for line in lines)


def test_version_swap_under_oip_traffic_fails_no_request(tmp_path: Path) -> None:
    """gRPC and REST v2 clients in a loop while new versions are published: every request
    is answered, by the version it names (x + version), never by an error."""
    base = tmp_path / "live"
    publish(base, 1)
    config = tmp_path / "models.config"
    config.write_text(config_text(base))
    rest_port = free_port()
    server = start_server(tmp_path, config, f"--rest_api_port={rest_port}")
    server.rest_port = rest_port  # type: ignore[attr-defined]
    errors: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def grpc_loop() -> None:
        with server.channel() as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    answer = stub.ModelInfer(raw_infer("live", np.ones([1, 1], np.float32),
                                                       "FP32", name="x"), timeout=30)
                except grpc.RpcError as exc:
                    errors.append(f"grpc: {exc.code()} {exc.details()}")
                    continue
                y = from_raw(answer.raw_output_contents[0], np.dtype(np.float32), [1, 1])
                if y[0, 0] != 1 + int(answer.model_version):
                    errors.append(f"grpc: version {answer.model_version} answered {y}")
                seen.append(int(answer.model_version))

    def rest_loop() -> None:
        while not stop.is_set():
            status, answer = http_json(server, "POST", "/v2/models/live/infer", {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]})
            if status != 200 or answer["outputs"][0]["data"] != [
                    1 + int(answer["model_version"])]:
                errors.append(f"rest: {status} {answer}")

    threads = [threading.Thread(target=f) for f in (grpc_loop, grpc_loop, rest_loop)]
    try:
        for thread in threads:
            thread.start()
        for version in (2, 3):
            publish(base, version)
            deadline = time.monotonic() + 60
            while not seen or seen[-1] != version:
                assert time.monotonic() < deadline, f"version {version} never answered"
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        server.stop()
    assert errors == []
    assert len(seen) > 20
