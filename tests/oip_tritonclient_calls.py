"""Every Open Inference Protocol call as the real ``tritonclient`` makes it; prints JSON.

Runs in tritonclient's own virtual environment (tests/test_oip_tritonclient.py makes it:
tritonclient pins protobuf below the server's), so it imports nothing of ours.

    python oip_tritonclient_calls.py GRPC_ADDRESS HTTP_ADDRESS < cases.json

cases.json: ``{"datatypes": [{"datatype": "FP32", "values": [...]}, ...], "shape": [2, 2]}``
(BYTES values as hex). Each datatype's model is ``id_<datatype>`` (an Identity from
``input`` to ``output``). The answer: one object per client (``grpc``; ``http_binary``
and ``http_json``: tritonclient's http client with binary data on and off), each call's
result with tensors in the plain form of ``plain`` below, or ``{"status", "message"}``
where tritonclient raised.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype


def plain(array: np.ndarray) -> list[Any]:
    """An answer's elements, flat, as JSON values: BYTES as hex, BF16/FP16 as floats."""
    flat = array.reshape(-1)
    if flat.dtype == np.object_:
        return [(v if isinstance(v, bytes) else str(v).encode()).hex() for v in flat]
    if flat.dtype.kind not in "biuf":  # ml_dtypes' bfloat16
        flat = flat.astype(np.float64)
    values: list[Any] = flat.tolist()
    return values


def array(datatype: str, values: list[Any], shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        made = np.empty(len(values), dtype=np.object_)
        made[:] = [bytes.fromhex(v) for v in values]
        return made.reshape(shape)
    return np.array(values, dtype=triton_to_np_dtype(datatype)).reshape(shape)


def caught(call: Callable[[], Any]) -> Any:
    """The call's result, or the error as tritonclient raised it."""
    try:
        return call()
    except InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}


def version_of(response: Any) -> str:
    return str(response["model_version"] if isinstance(response, dict)
               else response.model_version)


def run(module: Any, client: Any, binary: bool, cases: dict[str, Any]) -> dict[str, Any]:
    """Every call through one client; ``binary``: the http client's binary_data (gRPC's
    client always sends raw contents)."""
    is_grpc = module is grpcclient
    as_json = {"as_json": True} if is_grpc else {}

    def infer(model: str, inputs: list[tuple[str, str, np.ndarray]], *, version: str = "",
              outputs: list[str] | None = None, gzip: bool = False) -> dict[str, Any]:
        made = []
        for name, datatype, data in inputs:
            tensor = module.InferInput(name, list(data.shape), datatype)
            if is_grpc:
                tensor.set_data_from_numpy(data)
            else:  # BF16 only binary: tritonclient refuses it as JSON
                tensor.set_data_from_numpy(data, binary_data=binary or datatype == "BF16")
            made.append(tensor)
        requested = None if outputs is None else [
            module.InferRequestedOutput(n) if is_grpc
            else module.InferRequestedOutput(n, binary_data=binary) for n in outputs]
        compress = {} if not gzip else {"compression_algorithm": "gzip"} if is_grpc else {
            "request_compression_algorithm": "gzip"}
        result = client.infer(model, made, model_version=version, outputs=requested,
                              request_id="req-1", **compress)
        response = result.get_response(**as_json)
        answered = {}
        for output in response["outputs"]:
            data = result.as_numpy(output["name"])
            answered[output["name"]] = {
                "datatype": output["datatype"], "shape": [int(d) for d in output["shape"]],
                "values": plain(data),
            }
        return {"model_version": version_of(response), "id": response.get("id"),
                "outputs": answered}

    def metadata(model: str, version: str = "") -> dict[str, Any]:
        answer = client.get_model_metadata(model, version, **as_json)
        return {"name": answer["name"], "versions": answer["versions"],
                "platform": answer["platform"],
                "inputs": [[t["name"], t["datatype"], [int(d) for d in t["shape"]]]
                           for t in answer["inputs"]],
                "outputs": [[t["name"], t["datatype"], [int(d) for d in t["shape"]]]
                            for t in answer["outputs"]]}

    def round_trip(datatype: str, data: np.ndarray) -> dict[str, Any]:
        """What came back, and what was sent in the same plain form."""
        answer = caught(lambda: infer(f"id_{datatype.lower()}", [("input", datatype, data)],
                                      outputs=["output"]))
        return {"sent": plain(data), "answer": answer}

    shape = cases["shape"]
    x = np.array([[1.0], [2.0]], np.float32)
    server = client.get_server_metadata(**as_json)
    return {
        "server_live": client.is_server_live(),
        "server_ready": client.is_server_ready(),
        "server_metadata": {"name": server["name"], "extensions": server["extensions"]},
        "model_ready": {
            f"{model}@{version}": client.is_model_ready(model, version)
            for model, version in [("half_plus_two", ""), ("versions", "2"),
                                   ("versions", "canary"), ("versions", "9"),
                                   ("no_such_model", "")]
        },
        "model_metadata": {"half_plus_two": caught(lambda: metadata("half_plus_two")),
                           "versions": caught(lambda: metadata("versions", "canary")),
                           "no_such_model": caught(lambda: metadata("no_such_model"))},
        "round_trip": {
            case["datatype"]: round_trip(case["datatype"], array(case["datatype"],
                                                                 case["values"], shape))
            for case in cases["datatypes"]
        },
        "half_plus_two": caught(lambda: infer("half_plus_two", [("x", "FP32", x)])),
        "gzip": caught(lambda: infer("half_plus_two", [("x", "FP32", x)], gzip=True)),
        "versions": {version: caught(lambda version=version: infer(
            "versions", [("x", "FP32", x)], version=version)) for version in ["", "1", "canary"]},
        "requested": caught(lambda: infer(
            "two", [("a", "FP32", np.zeros([2, 3], np.float32)),
                    ("b", "INT64", np.array([3, -4], np.int64))], outputs=["twice"])),
        "errors": {
            "unknown_model": caught(lambda: infer("no_such_model", [("x", "FP32", x)])),
            "unknown_version": caught(lambda: infer("versions", [("x", "FP32", x)],
                                                    version="9")),
            "datatype": caught(lambda: infer("versions", [("x", "FP64", x.astype(np.float64))])),
            "shape": caught(lambda: infer("versions", [("x", "FP32", x.reshape(-1))])),
        },
    }


def main() -> None:
    grpc_address, http_address = sys.argv[1:3]
    cases = json.load(sys.stdin)
    answers: dict[str, Any] = {}
    with grpcclient.InferenceServerClient(grpc_address) as client:
        answers["grpc"] = run(grpcclient, client, True, cases)
    with httpclient.InferenceServerClient(http_address) as client:
        answers["http_binary"] = run(httpclient, client, True, cases)
        answers["http_json"] = run(httpclient, client, False, cases)
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
