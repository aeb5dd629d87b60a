"""TF Serving's REST API (--rest_api_port), end to end over HTTP, plus its text-level rules.

Expected bodies, codes and messages are TF Serving's: its Python tests
(tensorflow_model_server_test.py: testPredictREST, testGetStatusREST, ...),
the C++ http_rest_api_handler_test.cc cases, and the sources they test
(http_rest_api_handler.cc, http_rest_api_util.cc, util/json_tensor.cc,
http_server.cc). The server runs as a real process; requests go through
``requests``.
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper

from onnx_serving.server.api.rest.http_status import HTTP_STATUS
from onnx_serving.server.api.rest.predict_response import columnar_json, row_json
from onnx_serving.server.api.rest.rapidjson_compat import debug_string, double_text
from onnx_serving.server.api.rest.server import RestServer
from onnx_serving.server.api.rest.tensor_to_json import element_texts, tensor_json
from onnx_serving.server.errors import Code, ConfigError, InvalidArgument
from onnx_serving.server.metrics import Metrics
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.serving.core import ServingCore
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port

TIMEOUT = 30
JSON_TYPE = "application/json"
HALF_PLUS_TWO = EXAMPLES / "models" / "half_plus_two"


# ---------------------------------------------------------------------------
# Servers and helpers


def start_rest(flags: list[str], log: Path) -> tuple[ServerProcess, str]:
    port = free_port()
    process = ServerProcess([*flags, f"--rest_api_port={port}"], log).start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + TIMEOUT
    while True:  # gRPC answers first; REST opens right after it
        try:
            requests.get(f"{base}/v1/models/none", timeout=1)
            return process, base
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                process.stop()
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def rest(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test repository served with REST, flags as TF Serving's own test harness."""
    log = tmp_path_factory.mktemp("rest-logs") / "server.log"
    process, base = start_rest(
        [
            f"--model_config_file={repository}",
            "--allow_version_labels_for_unavailable_models",
            "--max_num_load_retries=0",
            "--rest_api_timeout_in_ms=5000",
        ],
        log,
    )
    yield base
    process.stop()


def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    return requests.request(method, base + path, data=data, headers=headers, timeout=TIMEOUT)


def ok(response: requests.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON_TYPE
    return response.json()


def error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON_TYPE
    body = response.json()
    assert list(body) == ["error"]
    return str(body["error"])


def predict(base: str, body: Any, model: str = "half_plus_two", **kwargs: Any) -> Any:
    return call(base, "POST", f"/v1/models/{model}:predict", body, **kwargs)


# ---------------------------------------------------------------------------
# TF Serving's own REST tests (tensorflow_model_server_test.py)


def test_predict_rest(rest: str) -> None:
    """testPredictREST."""
    assert ok(predict(rest, {"instances": [2.0, 3.0, 4.0]})) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(rest: str) -> None:
    """testPredictColumnarREST."""
    assert ok(predict(rest, {"inputs": [2.0, 3.0, 4.0]})) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(rest: str) -> None:
    """testGetStatusREST: the exact JSON."""
    assert ok(call(rest, "GET", "/v1/models/half_plus_two")) == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def _tensor_info(name: str, dims: list[int] | None, dtype: str = "DT_FLOAT") -> dict[str, Any]:
    shape: dict[str, Any] = (
        {"dim": [], "unknown_rank": True}
        if dims is None
        else {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    )
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _signature(method: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    return {"inputs": inputs, "outputs": outputs, "method_name": f"tensorflow/serving/{method}",
            "defaults": {}}


def test_get_model_metadata_rest(rest: str) -> None:
    """testGetModelMetadataREST: half_plus_two_model_metadata.json, field for field."""
    examples = {"inputs": _tensor_info("tf_example:0", None, "DT_STRING")}
    expected = {
        "model_spec": {"name": "half_plus_two", "signature_name": "", "version": "123"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": _signature(
                        "predict", {"x": _tensor_info("x:0", [-1, 1])},
                        {"y": _tensor_info("y:0", [-1, 1])},
                    ),
                    "classify_x_to_y": _signature(
                        "classify", examples, {"scores": _tensor_info("y:0", [-1, 1])}
                    ),
                    "regress_x_to_y": _signature(
                        "regress", examples, {"outputs": _tensor_info("y:0", [-1, 1])}
                    ),
                    "regress_x_to_y2": _signature(
                        "regress", examples, {"outputs": _tensor_info("y2:0", [-1, 1])}
                    ),
                    "regress_x2_to_y3": _signature(
                        "regress", {"inputs": _tensor_info("x2:0", [-1, 1])},
                        {"outputs": _tensor_info("y3:0", [-1, 1])},
                    ),
                }
            }
        },
    }
    assert ok(call(rest, "GET", "/v1/models/half_plus_two/metadata")) == expected
    assert ok(call(rest, "GET", "/v1/models/half_plus_two/versions/123/metadata")) == expected


def test_metadata_unknown_rank_version_and_label(rest: str) -> None:
    metadata = ok(call(rest, "GET", "/v1/models/dtypes/metadata"))
    signature = metadata["metadata"]["signature_def"]["signature_def"]["float32"]
    assert signature["inputs"]["input"]["tensor_shape"] == {"dim": [], "unknown_rank": True}
    by_label = ok(call(rest, "GET", "/v1/models/versions/labels/canary/metadata"))
    assert by_label["model_spec"] == {"name": "versions", "signature_name": "", "version": "2"}
    latest = ok(call(rest, "GET", "/v1/models/versions/metadata"))
    assert latest["model_spec"]["version"] == "3"


# ---------------------------------------------------------------------------
# http_rest_api_handler_test.cc


def test_predict_cases(rest: str) -> None:
    """TEST_F(HttpRestApiHandlerTest, Predict), on half_plus_two v123."""
    assert ok(predict(rest, {"instances": [[1.0, 2.0], [3.0, 4.0]]})) == {
        "predictions": [[2.5, 3.0], [3.5, 4.0]]
    }
    by_version = call(rest, "POST", "/v1/models/half_plus_two/versions/123:predict",
                      {"instances": [1.0, 2.0]})
    assert ok(by_version) == {"predictions": [2.5, 3.0]}
    named = {"signature_name": "serving_default", "instances": [3.0, 4.0]}
    assert ok(call(rest, "POST", "/v1/models/half_plus_two/versions/123:predict", named)) == {
        "predictions": [3.5, 4.0]
    }
    columnar = {"signature_name": "serving_default", "inputs": [3.0, 4.0]}
    assert ok(call(rest, "POST", "/v1/models/half_plus_two/versions/123:predict", columnar)) == {
        "outputs": [3.5, 4.0]
    }


def test_predict_by_label_and_version(rest: str) -> None:
    """Labels stable → 1 and canary → 2 of model "versions" (y = x + version)."""
    body = {"instances": [[1.0]]}
    assert ok(call(rest, "POST", "/v1/models/versions/labels/stable:predict", body)) == {
        "predictions": [[2.0]]
    }
    assert ok(call(rest, "POST", "/v1/models/versions/labels/canary:predict", body)) == {
        "predictions": [[3.0]]
    }
    assert ok(call(rest, "POST", "/v1/models/versions/versions/1:predict", body)) == {
        "predictions": [[2.0]]
    }
    assert ok(call(rest, "POST", "/v1/models/versions:predict", body)) == {"predictions": [[4.0]]}


def test_model_name_version_and_label_errors(rest: str) -> None:
    """PredictModelNameVersionErrors, plus the label cases of PredictRequestErrors."""
    body = {"instances": [1]}
    assert error(call(rest, "POST", "/v1/models/foo:predict", body), 404) == (
        "Servable not found for request: Latest(foo)"
    )
    assert error(call(rest, "POST", "/v1/models/foo/versions/50:predict", body), 404) == (
        "Servable not found for request: Specific(foo, 50)"
    )
    assert error(call(rest, "POST", "/v1/models/half_plus_two/versions/99:predict", body),
                 404) == "Servable not found for request: Specific(half_plus_two, 99)"
    bad_label = call(rest, "POST", "/v1/models/half_plus_two/labels/nope:predict",
                     {"instances": ["x", "y"]})
    assert error(bad_label, 400) == "Unrecognized servable version label: nope"
    gone = call(rest, "POST", "/v1/models/versions/labels/gone:predict", body)
    assert error(gone, 404) == "Servable not found for request: Specific(versions, 9)"


def test_get_status_by_version_and_label(rest: str) -> None:
    """GetStatus: by version one entry; a label is ignored, as TF's GetModelStatus ignores it."""
    one = ok(call(rest, "GET", "/v1/models/versions/versions/2"))
    assert one == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE",
         "status": {"error_code": "OK", "error_message": ""}}
    ]}
    every = ok(call(rest, "GET", "/v1/models/versions/labels/stable"))
    assert [s["version"] for s in every["model_version_status"]] == ["3", "2", "1"]
    assert error(call(rest, "GET", "/v1/models/nope"), 404) == (
        "Could not find any versions of model nope"
    )
    assert error(call(rest, "GET", "/v1/models/half_plus_two/versions/7"), 404) == (
        "Could not find version 7 of model half_plus_two"
    )


def test_get_status_of_a_failed_version(rest: str) -> None:
    (status,) = ok(call(rest, "GET", "/v1/models/broken"))["model_version_status"]
    assert status["version"] == "1"
    assert status["status"]["error_code"] != "OK"
    assert "broken" in status["status"]["error_message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/foo"),
        ("POST", "/v1/foo"),
        ("GET", "/v1/models/debug/model_name"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/foo:predict"),
        ("GET", "/v1/models/foo/version/50:predict"),
        ("POST", "/v1/models/foo/version/50:regress"),
        ("POST", "/v1/models/foo/versions/HELLO:regress"),
        ("POST", "/v1/models/foo/metadata"),
        ("POST", "/v1/models/foo/label/some_label:regress"),
        ("POST", "/v1/models/foo/versions/50/labels/some_label:regress"),
        ("POST", "/v1/models/foo/versions/some_label:regress"),
        ("GET", "/v1/models/half_plus_two/versions/123/labels/x"),
        ("PUT", "/v1/models/half_plus_two"),
        ("DELETE", "/v1/models/half_plus_two"),
        # Method names are matched case-sensitively after a case-insensitive path match.
        ("POST", "/v1/models/half_plus_two:PREDICT"),
        # The query string is part of the path TF matches.
        ("POST", "/v1/models/half_plus_two:predict?verbose=1"),
    ],
)
def test_malformed_requests(rest: str, method: str, path: str) -> None:
    """UnsupportedApiCalls: each answers INVALID_ARGUMENT "Malformed request: <method> <path>"."""
    response = call(rest, method, path, {"instances": [1.0]})
    assert error(response, 400) == f"Malformed request: {method} {path}"


def test_other_unsupported_calls(rest: str) -> None:
    assert error(call(rest, "GET", "/v1/models"), 400) == "Missing model name in request."
    big = f"/v1/models/foo/versions/{2**64 - 1}:regress"
    assert error(call(rest, "POST", big, {}), 400) == (
        f"Failed to convert version: {2**64 - 1} to numeric."
    )
    assert error(call(rest, "GET", "/v1/models/half_plus_two/versions/9223372036854775808"),
                 400) == "Failed to convert version: 9223372036854775808 to numeric."


def test_paths_outside_v1_are_plain_404s(rest: str) -> None:
    """/v2/ is the Open Inference Protocol's (tests/test_oip.py); other paths are TF's 404."""
    for path in ("/", "/v3/models/half_plus_two", "/monitoring/prometheus/metrics", "/v1"):
        response = call(rest, "GET", path)
        assert response.status_code == 404
        assert "404 Not Found" in response.text


def test_paths_match_as_tf_matches_them(rest: str) -> None:
    """Case-insensitive regexes; the name and label are percent-decoded."""
    upper = call(rest, "POST", "/V1/MODELS/half_plus_two:predict", {"instances": [2.0]})
    assert ok(upper) == {"predictions": [3.0]}
    status = ok(call(rest, "GET", "/v1/models/half%5Fplus%5Ftwo"))
    assert status["model_version_status"][0]["version"] == "123"
    labelled = call(rest, "POST", "/v1/models/versions/labels/st%61ble:predict",
                    {"instances": [[0.0]]})
    assert ok(labelled) == {"predictions": [[1.0]]}
    # "METADATA" parses but is not "metadata": TF answers with the status.
    assert "model_version_status" in ok(call(rest, "GET", "/v1/models/half_plus_two/METADATA"))


# ---------------------------------------------------------------------------
# Request bodies: PredictRequestErrors and json_tensor.cc's rules


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "JSON Parse error: The document is empty"),
        ("  \n", "JSON Parse error: The document is empty. at offset: 3"),
        ("instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
        ('{"instances": [1, 2}', "JSON Parse error: Missing a comma or ']' after an array "
                                 "element. at offset: 19"),
        ('{"instances" [1]}', "JSON Parse error: Missing a colon after a name of object member."
                              " at offset: 13"),
        ('{"instances": [1] "x": 1}', "JSON Parse error: Missing a comma or '}' after an object"
                                      " member. at offset: 18"),
        ('{"a', "JSON Parse error: Missing a closing quotation mark in string. at offset: 3"),
        ("[1.0]", "JSON Value: [1.0] Is not object"),
        ('{"signature_name": 100}', "JSON Value: {\n    \"signature_name\": 100\n} not formatted "
                                    "correctly. 'signature_name' key must be a string value."),
        ("{}", "Missing 'inputs' or 'instances' key"),
        ('{"instances": [1.0], "inputs": [1.0]}',
         "JSON Value: {\n    \"instances\": [1.0],\n    \"inputs\": [1.0]\n} Not formatted "
         "correctly expecting only one of 'inputs' or 'instances' keys to exist "),
        ('{"instances": 1.0}',
         "JSON Value: {\n    \"instances\": 1.0\n} Expecting 'instances' to be an list/array"),
        ('{"instances": []}', "JSON Value: {\n    \"instances\": []\n} No values in 'instances'"
                              " array"),
        ('{"instances": ["x", "y"]}',
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON Value: \"x\" Type: String is not of expected type: float"),
        ('{"instances": [1.0, [2.0]]}',
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting shape [] but got: [1]"),
        ('{"instances": [[1.0], [2.0, 3.0]]}',
         "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Expecting tensor size: 1 but got: 2"),
        ('{"instances": [[1.0, [2.0]]]}',
         "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
         "Encountered list at unexpected level: 1 expected < 1"),
        ('{"inputs": [[1.0], 2.0]}',
         "JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"),
        ('{"inputs": [[1.0], [2.0, 3.0]]}',
         "Encountered list at unexpected size: 2 at level: 1 expected size: 1"),
        ('{"inputs": [true]}', "JSON Value: true Type: True is not of expected type: float"),
        ('{"inputs": [null]}', "JSON Value: null Type: Null is not of expected type: float"),
        ('{"inputs": [{"b64": "AAAA"}]}',
         "JSON Value: {\n    \"b64\": \"AAAA\"\n} Type: Object is not of expected type: float"),
        ('{"instances": [{"x": 1.0}, [2.0]]}',
         "Expecting object but got list at item 1 of input list"),
        ('{"instances": [1.0, {"x": 2.0}]}',
         "Expecting value/list but got object at item 1 of input list"),
        ('{"instances": [{"z": 1.0}]}',
         "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: "
         "JSON object: does not have named input: z"),
        ('{"inputs": {"z": [1.0]}}', "Missing named input: x in 'inputs' object."),
    ],
)
def test_predict_request_errors(rest: str, raw: str, message: str) -> None:
    assert error(predict(rest, None, raw=raw), 400) == message


def test_deep_nesting_is_refused(rest: str) -> None:
    too_deep = '{"inputs": ' + "[" * 65 + "1.0" + "]" * 65 + "}"
    assert error(predict(rest, None, raw=too_deep), 400) == (
        "JSON tensor of rank 65 is deeper than the 64 dimensions supported"
    )
    unparsable = '{"inputs": ' + "[" * 100000
    assert error(predict(rest, None, raw=unparsable), 400) == (
        "JSON Parse error: the document is nested too deeply"
    )


def test_unknown_signature(rest: str) -> None:
    response = predict(rest, {"signature_name": "nope", "instances": [1.0]})
    assert error(response, 400) == 'Serving signature name: "nope" not found in signature def'


def test_named_instances_and_columns(rest: str) -> None:
    """Model "multi": floats [n,3] and ints [n] → plus_one and doubled."""
    rows = {"instances": [{"floats": [1, 2, 3], "ints": 4}, {"floats": [4, 5, 6], "ints": 5}]}
    assert ok(predict(rest, rows, model="multi")) == {"predictions": [
        {"plus_one": [2.0, 3.0, 4.0], "doubled": 8},
        {"plus_one": [5.0, 6.0, 7.0], "doubled": 10},
    ]}
    columns = {"inputs": {"floats": [[1, 2, 3], [4, 5, 6]], "ints": [4, 5], "unused": 1}}
    assert ok(predict(rest, columns, model="multi")) == {
        "outputs": {"plus_one": [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]], "doubled": [8, 10]}
    }
    one_output = {"signature_name": "doubler", **rows}
    assert ok(predict(rest, one_output, model="multi")) == {"predictions": [8, 10]}
    one_output_columns = {"signature_name": "doubler", "inputs": {"floats": [[0, 0, 0]],
                                                                  "ints": [21]}}
    assert ok(predict(rest, one_output_columns, model="multi")) == {"outputs": [42]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1, 2, 3]]}, "instances is a plain list, but expecting list of objects "
                                     "as multiple input tensors required as per tensorinfo_map"),
        ({"inputs": [[1, 2, 3]]}, "inputs is a plain value/list, but expecting an object as "
                                  "multiple input tensors required as per tensorinfo_map"),
        ({"inputs": {"floats": [[1, 2, 3]]}}, "Missing named input: ints in 'inputs' object."),
        ({"instances": [{"floats": [1, 2, 3]}]},
         "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"floats\": "
         "[1, 2, 3]\n} keys must be equal to: floats,ints"),
        ({"instances": [{"floats": [1, 2, 3], "ints": 1}, {"floats": [[1, 2, 3]], "ints": 2}]},
         "Failed to process element: 1 key: floats of 'instances' list. Error: "
         "INVALID_ARGUMENT: Expecting shape [3] but got: [1,3]"),
        ({"instances": [{"floats": [1, 2, 3], "ints": 1.5}]},
         "Failed to process element: 0 key: ints of 'instances' list. Error: "
         "INVALID_ARGUMENT: JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ],
)
def test_named_input_errors(rest: str, body: Any, message: str) -> None:
    assert error(predict(rest, body, model="multi"), 400) == message


def test_runtime_errors_are_invalid_argument(rest: str) -> None:
    """A shape the graph cannot take: TF leaves it to the runtime (INVALID_ARGUMENT)."""
    response = predict(rest, {"inputs": {"floats": [[1, 2]], "ints": [1]}}, model="multi")
    assert "floats" in error(response, 400)


# ---------------------------------------------------------------------------
# Types: model "dtypes" echoes each dtype through its own signature


def echo(base: str, dtype: str, body: dict[str, Any]) -> requests.Response:
    return predict(base, {"signature_name": dtype, **body}, model="dtypes")


def test_float_text_is_tf_formatted(rest: str) -> None:
    """WriteDecimal: %.6g if it reads back, else max_digits10; ".0" on whole numbers."""
    raw = ('{"signature_name": "float32", "instances": '
           "[0.1, 3, 1e-05, 9000000, 1234567, 3.14159274, -0.0, NaN, Infinity, -Infinity]}")
    response = predict(rest, None, model="dtypes", raw=raw)
    assert response.status_code == 200, response.text
    assert response.text == (
        '{"predictions": [0.1,3.0,1e-05,9e+06,1234567.0,3.14159274,-0.0,NaN,Infinity,-Infinity]}'
    )
    double = echo(rest, "float64", {"inputs": [0.1, 1 / 3, 2.0, 1e300]})
    assert double.text == '{"outputs": [0.1,0.33333333333333331,2.0,1e+300]}'


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        ("int8", [-128, 127]),
        ("int16", [-32768, 32767]),
        ("int32", [-(2**31), 2**31 - 1]),
        ("int64", [-(2**63), 2**63 - 1]),
        ("uint8", [0, 255]),
        ("uint16", [0, 65535]),
        ("uint32", [0, 2**32 - 1]),
        ("uint64", [0, 2**64 - 1]),
        ("bool", [True, False]),
        ("float16", [0.5, 65504.0]),
        ("bfloat16", [1.5, -2.0]),
        ("float8_e4m3fn", [0.5, 448.0]),
        ("float8_e5m2", [0.25, -3.0]),
        ("float32", [1.5, -2.0]),
        ("float64", [1.5, -2.0]),
        ("object", ["text", "\u00e9t\u00e9 \"quoted\"\n"]),
    ],
)
def test_every_dtype_round_trips(rest: str, dtype: str, values: list[Any]) -> None:
    assert ok(echo(rest, dtype, {"instances": values})) == {"predictions": values}
    assert ok(echo(rest, dtype, {"inputs": [values]})) == {"outputs": [values]}


@pytest.mark.parametrize(
    ("dtype", "value", "type_text"),
    [
        ("int8", 128, "Number"),
        ("uint8", -1, "Number"),
        ("int32", 1.5, "Number"),
        ("int64", 2**63, "Number"),
        ("uint64", 2**64, "Number"),
        ("bool", 1, "Number"),
        ("object", 1, "Number"),
        ("float32", "1.0", "String"),
    ],
)
def test_values_must_suit_the_dtype(
    rest: str, dtype: str, value: Any, type_text: str
) -> None:
    name = {"object": "string", "float32": "float"}.get(dtype, dtype)
    text = debug_string(value)
    assert error(echo(rest, dtype, {"inputs": [value]}), 400) == (
        f"JSON Value: {text} Type: {type_text} is not of expected type: {name}"
    )


def test_strings_and_base64(rest: str) -> None:
    body = {"instances": [{"b64": "aGVsbG8="}, "w\u00f6rld", {"b64": "aGk"}]}
    assert ok(echo(rest, "object", body)) == {"predictions": ["hello", "w\u00f6rld", "hi"]}
    bad = echo(rest, "object", {"inputs": [{"b64": "!!"}]})
    assert error(bad, 400) == "Unable to base64 decode"
    not_b64 = echo(rest, "object", {"inputs": [{"b64": 1}]})
    assert error(not_b64, 400) == (
        'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'
    )
    not_utf8 = echo(rest, "object", {"inputs": [{"b64": "/w=="}]})
    assert "UTF-8" in error(not_utf8, 400)


def test_scalars_and_empty_tensors(rest: str) -> None:
    assert ok(echo(rest, "float32", {"inputs": 2.5})) == {"outputs": 2.5}
    assert ok(echo(rest, "int64", {"inputs": [[], []]})) == {"outputs": [[], []]}
    assert ok(echo(rest, "int64", {"instances": [[], []]})) == {"predictions": [[], []]}


def test_gzip_request_body(rest: str) -> None:
    body = gzip.compress(json.dumps({"instances": [2.0, 3.0, 4.0]}).encode())
    response = predict(rest, None, raw=body, headers={"Content-Encoding": "gzip"})
    assert ok(response) == {"predictions": [3.0, 3.5, 4.0]}
    corrupt = predict(rest, None, raw=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert error(corrupt, 400).startswith("Cannot inflate the gzip request body")


def test_body_over_the_limit_is_refused_before_reading(rest: str) -> None:
    host, port = rest.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        connection.putrequest("POST", "/v1/models/half_plus_two:predict")
        connection.putheader("Content-Length", str(3 * 2**30))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
        assert "limit" in json.loads(response.read())["error"]
    finally:
        connection.close()


def classify(base: str, body: Any, model: str = "half_plus_two", **kwargs: Any) -> Any:
    return call(base, "POST", f"/v1/models/{model}:classify", body, **kwargs)


def regress(base: str, body: Any, model: str = "half_plus_two", **kwargs: Any) -> Any:
    return call(base, "POST", f"/v1/models/{model}:regress", body, **kwargs)


def test_classify_and_regress_cases(rest: str) -> None:
    """TEST_F(HttpRestApiHandlerTest, Regress/Classify): x=80 → 42, x=20 → 12, x=10 → 7."""
    by_version = call(rest, "POST", "/v1/models/half_plus_two/versions/123:regress",
                      {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]})
    assert ok(by_version) == {"results": [42.0]}
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}, {"x": 10.0}]}
    assert ok(classify(rest, body)) == {"results": [[["", 12.0]], [["", 7.0]]]}


def test_classify_rest_labels_scores_and_context(rest: str) -> None:
    body = {"signature_name": "classify_both", "context": {"x": 5.0},
            "examples": [{}, {"x": 0.5}]}
    assert ok(classify(rest, body, "classifier")) == {
        "results": [[["5", 5.0], ["10", 10.0]], [["0.5", 0.5], ["1", 1.0]]]
    }
    regressed = regress(rest, {"signature_name": "regress_1d", "examples": [{"x": [1.5]}]},
                        "classifier")
    assert ok(regressed) == {"results": [1.5]}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
         "No signature was found with the name: nope"),
        ({"signature_name": 7, "examples": []}, 400,
         "'signature_name' key must be a string value."),
        ({"signature_name": "regress_x_to_y"}, 400,
         "When method is classify, key 'examples' is expected and was not found"),
        ({"signature_name": "regress_x_to_y", "examples": {}}, 400,
         "Expecting 'examples' value to be an list/array"),
        ({"signature_name": "regress_x_to_y", "examples": []}, 400,
         "'examples' value is an empty array"),
        ({"signature_name": "regress_x_to_y", "examples": [[1.0]]}, 400,
         "Example must be JSON object but got JSON Array"),
        ({"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}], "context": 3}, 400,
         "Example must be JSON object but got JSON Number"),
        ({"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, 2]}]}, 400,
         "Unexpected element type in feature: x expecting type: float"),
        ({"signature_name": "regress_x_to_y", "examples": [{"x": None}]}, 400,
         "Feature: x has element with unexpected JSON type: Null"),
        ({"signature_name": "regress_x_to_y", "examples": [{"x": 2**63}]}, 400,
         "Feature: x has uint64_t element. Only int64_t is supported."),
        ({"signature_name": "regress_x_to_y", "examples": [{"x": 1}]}, 400,
         "Data types don't match. Data type: int64 but expected type: float"),
        ({"signature_name": "regress_x_to_y", "examples": [{"y": 1.0}]}, 400,
         "Feature: x (data type: float) is required but could not be found."),
    ],
    ids=["signature", "signature_type", "no_examples", "examples_object", "examples_empty",
         "example_list", "context_number", "mixed_kinds", "null", "uint64", "int_for_float",
         "missing_feature"],
)
def test_regress_rest_errors(rest: str, body: Any, status: int, message: str) -> None:
    assert message in error(regress(rest, body), status)


def test_classify_rest_unknown_model_and_predict_signature(rest: str) -> None:
    body = {"examples": [{"x": 1.0}]}
    assert error(classify(rest, body, "nope"), 404) == (
        "Servable not found for request: Latest(nope)"
    )
    # serving_default, a Predict signature, takes "x", not "inputs".
    assert error(classify(rest, body), 400).startswith(
        'No classification inputs found in SignatureDef: inputs {\n  key: "x"\n'
    )


def test_cors_preflight(rest: str) -> None:
    allowed = call(rest, "OPTIONS", "/v1/models/half_plus_two:predict",
                   headers={"Origin": "https://example.com"})
    assert allowed.status_code == 200
    refused = call(rest, "OPTIONS", "/v1/models/half_plus_two:predict")
    assert error(refused, 400) == "Origin header is missing in CORS preflight"


# ---------------------------------------------------------------------------
# A second server: bytes outputs, a slow model and a short timeout


def _slow_model() -> onnx.ModelProto:
    """total = sum(ones([n, n]) @ ones([n, n])): seconds of work for n in the thousands."""
    nodes = [
        helper.make_node("Reshape", ["n", "one"], ["n1"]),
        helper.make_node("Concat", ["n1", "n1"], ["shape"], axis=0),
        helper.make_node("ConstantOfShape", ["shape"], ["a"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("MatMul", ["a", "a"], ["b"]),
        helper.make_node("ReduceSum", ["b"], ["total"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "slow", [helper.make_tensor_value_info("n", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
        initializer=[numpy_helper.from_array(np.array([1], np.int64), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _echo_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])], "echo",
        [helper.make_tensor_value_info("input", TensorProto.STRING, None)],
        [helper.make_tensor_value_info("output", TensorProto.STRING, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("rest-models")
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.onnx").write_bytes(_slow_model().SerializeToString())
    echo_dir = root / "echo" / "1"
    echo_dir.mkdir(parents=True)
    (echo_dir / "model.onnx").write_bytes(_echo_model().SerializeToString())
    text = {"inputs": {"text": {"name": "input"}}}
    (echo_dir / "signatures.json").write_text(json.dumps({"signature_def": {
        "serving_default": {**text, "outputs": {"echo": {"name": "output"}}},
        "bytes": {**text, "outputs": {"echo_bytes": {"name": "output"}}},
    }}))
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "slow" base_path: "{root / "slow"}" model_platform: "onnx" }}\n'
        f'  config {{ name: "echo" base_path: "{echo_dir.parent}" model_platform: "onnx" }}\n'
        "}\n"
    )
    log = tmp_path_factory.mktemp("rest-custom-logs") / "server.log"
    process, base = start_rest(
        [f"--model_config_file={config}", "--rest_api_timeout_in_ms=150"], log
    )
    yield base
    process.stop()


def test_bytes_outputs_are_base64(custom: str) -> None:
    body = {"instances": [{"b64": "aGk="}, "th\u00e9"]}
    assert ok(predict(custom, body, model="echo")) == {"predictions": ["hi", "th\u00e9"]}
    named = {"signature_name": "bytes", **body}
    assert ok(predict(custom, named, model="echo")) == {
        "predictions": [{"b64": "aGk="}, {"b64": "dGjDqQ=="}]
    }
    columns = {"signature_name": "bytes", "inputs": ["a"]}
    assert ok(predict(custom, columns, model="echo")) == {"outputs": [{"b64": "YQ=="}]}


def test_scalar_outputs(custom: str) -> None:
    assert ok(predict(custom, {"inputs": 3}, model="slow")) == {"outputs": 27.0}
    assert error(predict(custom, {"instances": [3]}, model="slow"), 400) == (
        "Tensor name: total has no shape information "
    )


def test_deadline_exceeded_is_504(custom: str) -> None:
    started = time.monotonic()
    response = predict(custom, {"inputs": 4000}, model="slow")
    assert error(response, 504) == (
        "Request did not complete within --rest_api_timeout_in_ms=150"
    )
    assert time.monotonic() - started < 2
    # The server goes on answering while the abandoned run finishes.
    assert ok(predict(custom, {"inputs": ["still here"]}, model="echo")) == {
        "outputs": ["still here"]
    }


# ---------------------------------------------------------------------------
# RestServer itself, in process


def test_busy_port_is_a_config_error() -> None:
    manager: ModelManager[Any] = ModelManager(lambda _name, path: path)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = RestServer(ServingCore(manager), port=port, threads=1, timeout_ms=0,
                            metrics=Metrics())
        with pytest.raises(ConfigError, match=f"Cannot listen on 0.0.0.0:{port}"):
            server.start()
    manager.close()


def test_start_answers_and_stop_frees_the_port() -> None:
    manager: ModelManager[Any] = ModelManager(lambda _name, path: path)
    port = free_port()
    server = RestServer(ServingCore(manager), port=port, threads=2, timeout_ms=1000,
                        metrics=Metrics())
    server.start()
    try:
        response = requests.get(f"http://127.0.0.1:{port}/v1/models/x", timeout=TIMEOUT)
        assert error(response, 404) == "Could not find any versions of model x"
    finally:
        server.stop()
        manager.close()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("0.0.0.0", port))


def test_server_refuses_to_start_on_a_busy_rest_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = [sys.executable, "-m", "onnx_serving.server", "serve",
                   f"--port={free_port()}", f"--rest_api_port={port}",
                   f"--model_base_path={HALF_PLUS_TWO}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"Failed to start server. Error: Cannot listen on 0.0.0.0:{port}" in result.stderr


# ---------------------------------------------------------------------------
# The text rules, in process


@pytest.mark.parametrize("code", list(Code))
def test_every_code_has_tf_servings_http_status(code: Code) -> None:
    expected = {
        "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
        "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
        "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
        "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
        "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
    }
    assert HTTP_STATUS[code] == expected[code.name]


def _tf_write_decimal(value: float, dtype: np.dtype) -> str:
    """json_tensor.cc WriteDecimal, element by element: the reference for the numpy version."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:.6g}"
    if dtype.type(float(text)) != dtype.type(value):
        text = f"{value:.17g}" if dtype == np.float64 else f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


@pytest.mark.parametrize("dtype", [np.dtype(np.float32), np.dtype(np.float64)])
def test_float_texts_match_tf_element_by_element(dtype: np.dtype) -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.standard_normal(20000),
        rng.standard_normal(20000) * 10.0 ** rng.integers(-45, 45, 20000),
        np.round(rng.standard_normal(20000) * 1e4, 2),
        rng.integers(-(10**12), 10**12, 2000).astype(np.float64),
        [0.0, -0.0, 1e6, 999999.0, 1e-5, 1e-4, 123456.0, 1234567.0, 1e16, 1e17, 0.1, 1 / 3,
         math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, 3.4e38, 1e-45,
         16777217.0, 1e22, 1e23, 1e27, 1e28, 123456789.0, 2.5e-18, 7e-17],
    ])
    with np.errstate(over="ignore"):
        array = values.astype(dtype)
    expected = [_tf_write_decimal(v, dtype) for v in array.astype(np.float64).tolist()]
    assert element_texts(array) == expected  # the whole-tensor path
    one_by_one = [text for value in array for text in element_texts(np.array([value]))]
    assert one_by_one == expected  # the path for a few values
    in_hundreds = [text for start in range(0, array.size, 100)
                   for text in element_texts(array[start:start + 100])]
    assert in_hundreds == expected


@pytest.mark.parametrize("dtype", [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)])
def test_narrow_floats_read_the_same_few_or_many(dtype: np.dtype) -> None:
    """Six digits always read back for 16-bit floats, written alone or in a large tensor."""
    rng = np.random.default_rng(11)
    with np.errstate(over="ignore"):
        array = np.concatenate([
            rng.standard_normal(500) * 10.0 ** rng.integers(-8, 8, 500),
            [0.0, -0.0, 1e6, 65504.0, 0.1, math.nan, math.inf, -math.inf],
        ]).astype(dtype)
    one_by_one = [text for value in array for text in element_texts(np.array([value]))]
    assert one_by_one == element_texts(array)


def test_tensor_layout() -> None:
    assert tensor_json(np.arange(6, dtype=np.int32).reshape(2, 3, 1)) == (
        "[[[0],[1],[2]],[[3],[4],[5]]]"
    )
    assert tensor_json(np.array(2, dtype=np.int64)) == "2"
    assert tensor_json(np.zeros((2, 0, 3))) == "[[],[]]"
    assert tensor_json(np.array([True, False])) == "[true,false]"
    assert tensor_json(np.array(["a\"\n"], dtype=object)) == '["a\\"\\n"]'
    assert tensor_json(np.array(["hi"], dtype=object), as_bytes=True) == '[{"b64": "aGk="}]'
    assert tensor_json(np.array([0.1], dtype=ml_dtypes.bfloat16)) == "[0.100098]"


def test_row_format_rules() -> None:
    """MakeRowFormatJsonFromTensors: rows need a shape and one batch size."""
    with pytest.raises(InvalidArgument) as no_shape:
        row_json({"a": np.array(1.0)})
    assert no_shape.value.message == "Tensor name: a has no shape information "
    with pytest.raises(InvalidArgument) as batches:
        row_json({"a": np.zeros(2), "b": np.zeros(3)})
    assert batches.value.message == "Tensor name: b has inconsistent batch size: 3 expecting: 2"
    outputs = {
        "a": np.zeros((2, 0), np.float32),
        "b_bytes": np.array(["x", "y"], dtype=object),
        "c": np.array([[1, 2], [3, 4]], np.int32),
    }
    assert row_json(outputs) == (
        '{"predictions": [{"a": [], "b_bytes": {"b64": "eA=="}, "c": [1,2]},'
        '{"a": [], "b_bytes": {"b64": "eQ=="}, "c": [3,4]}]}'
    )
    del outputs["a"]
    assert json.loads(row_json(outputs)) == {"predictions": [
        {"b_bytes": {"b64": "eA=="}, "c": [1, 2]}, {"b_bytes": {"b64": "eQ=="}, "c": [3, 4]},
    ]}
    assert columnar_json(outputs) == (
        '{"outputs": {"b_bytes": [{"b64": "eA=="},{"b64": "eQ=="}], "c": [[1,2],[3,4]]}}'
    )


def test_debug_strings_are_rapidjsons() -> None:
    value = {"instances": [1.0, "x\u0001", None, True], "o": {"k": []}, "e": {}}
    assert debug_string(value) == (
        '{\n    "instances": [1.0, "x\\u0001", null, true],\n    "o": {\n        "k": []\n'
        '    },\n    "e": {}\n}'
    )
    cut = debug_string(list(range(1000)))
    assert cut.startswith("[0, 1, 2") and 256 <= len(cut) < 270 and not cut.endswith("]")
    assert debug_string([1.0, math.nan, 2.0]) == "[1.0, "
    assert [double_text(v) for v in (2.0, 0.1, 1e-7, 1e20, 1e21, 1.5e-7, 123.25, -0.0)] == [
        "2.0", "0.1", "1e-7", "100000000000000000000.0", "1e21", "1.5e-7", "123.25", "-0.0"
    ]


@pytest.mark.slow
def test_one_million_float_response(rest: str) -> None:
    """Times 1M floats through half_plus_two, and the response encoding alone; -m slow."""
    values = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    body = json.dumps({"inputs": values.tolist()})
    started = time.perf_counter()
    response = predict(rest, None, raw=body)
    request_s = time.perf_counter() - started
    outputs = np.array(ok(response)["outputs"], dtype=np.float32)
    assert np.array_equal(outputs, values * np.float32(0.5) + np.float32(2.0))
    started = time.perf_counter()
    text = tensor_json(values)
    encode_s = time.perf_counter() - started
    print(f"\n1M float32: request {request_s * 1000:.0f} ms; encoding the response alone "
          f"{encode_s * 1000:.0f} ms ({len(text) / 1e6:.1f} MB)")
