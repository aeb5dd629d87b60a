"""TF Serving's own tensorflow_model_server_test.py, case by case, against half_plus_two.

Each test is the TF Serving test of the same name (model_servers/
tensorflow_model_server_test.py and its test_util base): the server is started as
its harness starts tensorflow_model_server (``--model_name=default``, REST with
``--rest_api_timeout_in_ms=5000``, a UNIX socket), asked with the real
tensorflow-serving-api stubs and plain HTTP (urllib, as its CallREST), and checked
with its assertions. ``tf1`` is TF Serving's TF1 export of half_plus_two (its
exporter's five signatures, Predict over the parsed ``x`` and the rest over
serialized tf.Example), built with TensorFlow and converted by ``onnx-serving
convert`` in this test run; ``tf2`` is the bundled example (examples/
build_models.py) with the method names of TF Serving's TF2 export, all Predict's.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port

RPC_TIMEOUT = 5.0
VERSION = 123
HALF_PLUS_TWO = EXAMPLES / "models" / "half_plus_two"


def tf2_layout(base: Path) -> Path:
    """The bundled half_plus_two as TF's TF2 export declares it: every method_name is
    Predict's, which Classify and Regress accept (no --enable_signature_method_name_check)."""
    shutil.copytree(HALF_PLUS_TWO, base)
    path = base / str(VERSION) / "signatures.json"
    document = json.loads(path.read_text())
    for signature in document["signature_def"].values():
        signature["method_name"] = "tensorflow/serving/predict"
    path.write_text(json.dumps(document))
    return base


class Served:
    def __init__(self, process: ServerProcess, rest_port: int, socket: Path) -> None:
        self.process = process
        self.grpc = process.address
        self.rest = f"127.0.0.1:{rest_port}"
        self.socket = socket


@pytest.fixture(scope="module", params=["tf1", "tf2"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    root = tmp_path_factory.mktemp(f"model-server-{request.param}")
    base = (
        request.getfixturevalue("converted_half_plus_two") if request.param == "tf1"
        else tf2_layout(root / "half_plus_two")
    )
    rest_port = free_port()
    socket = root / "tf-serving.sock"
    process = ServerProcess(
        ["--model_name=default", f"--model_base_path={base}", f"--rest_api_port={rest_port}",
         "--rest_api_timeout_in_ms=5000", f"--grpc_socket_path={socket}"],
        root / "server.log",
    ).start()
    try:
        yield Served(process, rest_port, socket)
    finally:
        process.stop()


def prediction_stub(address: str) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


def call_rest(url: str, req: Any) -> bytes:
    """CallREST: urllib, POST with a JSON body, GET without one."""
    data = json.dumps(req).encode("utf-8") if req is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as resp:
        return bytes(resp.read())


def sorted_object(obj: Any) -> Any:
    """SortedObject: order-insensitive comparison of JSON documents."""
    if isinstance(obj, dict):
        return sorted((k, sorted_object(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return sorted(sorted_object(x) for x in obj)
    return obj


def verify_model_spec(spec: Any, name: str, signature_name: str, version: int) -> None:
    assert spec.name == name
    assert spec.signature_name == signature_name
    assert spec.version.value == version


def verify_predict_request(
    address: str, expected_output: float, *, specify_output: bool = True,
    batch_input: bool = False, signature_name: str = "serving_default",
) -> None:
    """VerifyPredictRequest, as TF Serving's test base sends and checks it."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = prediction_stub(address).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, "default", signature_name, VERSION)


def test_get_model_status(served: Served) -> None:
    """testGetModelStatus."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(served.grpc))
    result = stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0


def test_get_model_metadata(served: Served) -> None:
    """testGetModelMetadata."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = prediction_stub(served.grpc).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == VERSION
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata


def test_classify(served: Served) -> None:
    """testClassify, testClassifyTf2."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = prediction_stub(served.grpc).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


def test_regress(served: Served) -> None:
    """testRegress, testRegressTf2."""
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = prediction_stub(served.grpc).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", VERSION)


def test_multi_inference(served: Served) -> None:
    """testMultiInference, testMultiInferenceTf2."""
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = prediction_stub(served.grpc).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, "default",
                          request.tasks[i].model_spec.signature_name, VERSION)


def test_predict_saved_model(served: Served) -> None:
    """testPredictSavedModel (_TestPredict): with and without output_filter."""
    verify_predict_request(served.grpc, 3.0)
    verify_predict_request(served.grpc, 3.0, specify_output=False)


def test_predict_batch_input(served: Served) -> None:
    """VerifyPredictRequest(batch_input=True), as the batching and Keras tests send x."""
    verify_predict_request(served.grpc, 3.0, batch_input=True)


def test_predict_uds(served: Served) -> None:
    """testPredictUDS: gRPC over --grpc_socket_path."""
    verify_predict_request(f"unix:{served.socket}", 3.0, specify_output=False)


def test_classify_rest(served: Served) -> None:
    """testClassifyREST."""
    url = f"http://{served.rest}/v1/models/default:classify"
    json_req = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert json.loads(call_rest(url, json_req).decode()) == {"results": [[["", 3.0]]]}


def test_regress_rest(served: Served) -> None:
    """testRegressREST."""
    url = f"http://{served.rest}/v1/models/default:regress"
    json_req = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert json.loads(call_rest(url, json_req).decode()) == {"results": [3.0]}


def test_predict_rest(served: Served) -> None:
    """testPredictREST."""
    url = f"http://{served.rest}/v1/models/default:predict"
    json_req = {"instances": [2.0, 3.0, 4.0]}
    assert json.loads(call_rest(url, json_req).decode()) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(served: Served) -> None:
    """testPredictColumnarREST."""
    url = f"http://{served.rest}/v1/models/default:predict"
    json_req = {"inputs": [2.0, 3.0, 4.0]}
    assert json.loads(call_rest(url, json_req).decode()) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(served: Served) -> None:
    """testGetStatusREST."""
    url = f"http://{served.rest}/v1/models/default"
    assert json.loads(call_rest(url, None).decode()) == {
        "model_version_status": [{
            "version": "123",
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }]
    }


def _tensor(name: str, dtype: str = "DT_FLOAT", dims: list[int] | None = None) -> dict[str, Any]:
    shape: dict[str, Any] = (
        {"dim": [], "unknown_rank": True} if dims is None
        else {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    )
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def half_plus_two_model_metadata(converted: bool) -> dict[str, Any]:
    """servables/tensorflow/testdata/half_plus_two_model_metadata.json. It describes the
    checked-in export, whose tf_example placeholder had no shape; TF's exporter now gives
    it shape [None] (saved_model_half_plus_two.py), so the model converted here says
    [-1]. The TF2 layout differs only in its method names."""
    predict_only = not converted

    def signature(method: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
        method = "predict" if predict_only else method
        return {"inputs": inputs, "outputs": outputs, "defaults": {},
                "method_name": f"tensorflow/serving/{method}"}

    examples = {"inputs": _tensor("tf_example:0", "DT_STRING", [-1] if converted else None)}
    column = [-1, 1]
    return {
        "model_spec": {"name": "default", "signature_name": "", "version": "123"},
        "metadata": {"signature_def": {"signature_def": {
            "regress_x2_to_y3": signature(
                "regress", {"inputs": _tensor("x2:0", dims=column)},
                {"outputs": _tensor("y3:0", dims=column)}),
            "serving_default": signature(
                "predict", {"x": _tensor("x:0", dims=column)}, {"y": _tensor("y:0", dims=column)}),
            "classify_x_to_y": signature(
                "classify", examples, {"scores": _tensor("y:0", dims=column)}),
            "regress_x_to_y2": signature(
                "regress", examples, {"outputs": _tensor("y2:0", dims=column)}),
            "regress_x_to_y": signature(
                "regress", examples, {"outputs": _tensor("y:0", dims=column)}),
        }}},
    }


def test_get_model_metadata_rest(served: Served, request: pytest.FixtureRequest) -> None:
    """testGetModelMetadataREST: equal to half_plus_two_model_metadata.json, in any order."""
    url = f"http://{served.rest}/v1/models/default/metadata"
    expected = half_plus_two_model_metadata(converted="tf1" in request.node.callspec.id)
    assert sorted_object(json.loads(call_rest(url, None).decode())) == sorted_object(expected)
