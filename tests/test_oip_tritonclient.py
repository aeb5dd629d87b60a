"""The Open Inference Protocol as the real ``tritonclient`` speaks it (grpc and http, binary
data on and off), against the real server.

tritonclient pins protobuf below 7 and the server runs on 7, so it gets its own virtual
environment, ``.venv/tritonclient`` (made once, reused; ``make clean`` removes it), and
runs as a subprocess: tests/oip_tritonclient_calls.py makes every call once per client
and prints the answers, which the tests here read. Where the environment cannot be made
(no package registry), the tests skip and say so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.server_process import ServerProcess
from tests.test_oip import DATATYPES, SHAPE, oip_server  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "tritonclient"
REQUIREMENT = "tritonclient[grpc,http]"
SCRIPT = Path(__file__).with_name("oip_tritonclient_calls.py")
CLIENTS = ["grpc", "http_binary", "http_json"]
# How each client reports a status: gRPC's code, HTTP's number.
NOT_FOUND = {"grpc": "StatusCode.NOT_FOUND", "http_binary": "404", "http_json": "404"}
INVALID = {"grpc": "StatusCode.INVALID_ARGUMENT", "http_binary": "400", "http_json": "400"}


@pytest.fixture(scope="session")
def tritonclient_python() -> Path:
    """The python of tritonclient's own environment, made on first use."""
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if marker.is_file() and marker.read_text() == REQUIREMENT:
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         REQUIREMENT], capture_output=True, text=True, timeout=900,
    )
    if install.returncode != 0:
        shutil.rmtree(VENV, ignore_errors=True)
        pytest.skip(f"cannot install {REQUIREMENT} into {VENV} (no package registry?): "
                    f"{install.stderr.strip()[-400:]}")
    marker.write_text(REQUIREMENT)
    return python


def _hex_or_plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


@pytest.fixture(scope="module")
def answers(tritonclient_python: Path, oip_server: ServerProcess  # noqa: F811
            ) -> dict[str, Any]:
    cases = {"shape": SHAPE, "datatypes": [
        {"datatype": datatype, "values": [_hex_or_plain(v) for v in values]}
        for datatype, _, _, values in DATATYPES
    ]}
    run = subprocess.run(
        [str(tritonclient_python), str(SCRIPT), oip_server.address,
         f"127.0.0.1:{oip_server.rest_port}"],  # type: ignore[attr-defined]
        input=json.dumps(cases), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answers: dict[str, Any] = json.loads(run.stdout)
    return answers


@pytest.mark.parametrize("client", CLIENTS)
def test_server_methods(answers: dict[str, Any], client: str) -> None:
    got = answers[client]
    assert got["server_live"] is True
    assert got["server_ready"] is True
    assert got["server_metadata"]["name"] == "onnx-serving"
    assert "binary_tensor_data" in got["server_metadata"]["extensions"]


@pytest.mark.parametrize("client", CLIENTS)
def test_model_ready_and_metadata(answers: dict[str, Any], client: str) -> None:
    got = answers[client]
    assert got["model_ready"] == {"half_plus_two@": True, "versions@2": True,
                                  "versions@canary": True, "versions@9": False,
                                  "no_such_model@": False}
    assert got["model_metadata"]["half_plus_two"] == {
        "name": "half_plus_two", "versions": ["123"], "platform": "onnxruntime_onnx",
        "inputs": [["x", "FP32", [-1, 1]]], "outputs": [["y", "FP32", [-1, 1]]]}
    assert got["model_metadata"]["versions"]["versions"] == ["3", "2", "1"]
    missing = got["model_metadata"]["no_such_model"]
    assert missing["status"] == NOT_FOUND[client]
    assert "no_such_model" in missing["message"]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("datatype", [d[0] for d in DATATYPES])
def test_every_datatype_round_trips(answers: dict[str, Any], client: str,
                                    datatype: str) -> None:
    """Raw contents on gRPC; on HTTP binary data, and JSON (BF16 goes binary even then:
    tritonclient sends it no other way)."""
    got = answers[client]["round_trip"][datatype]
    assert got["answer"] == {"model_version": "1", "id": "req-1", "outputs": {"output": {
        "datatype": datatype, "shape": SHAPE, "values": got["sent"]}}}
    assert len(got["sent"]) == int(np.prod(SHAPE))


@pytest.mark.parametrize("client", CLIENTS)
def test_infer_versions_labels_and_requested_outputs(answers: dict[str, Any],
                                                     client: str) -> None:
    got = answers[client]
    assert got["half_plus_two"]["outputs"]["y"]["values"] == [2.5, 3.0]
    assert got["half_plus_two"]["model_version"] == "123"
    # The request body gzipped: Content-Encoding on HTTP, gRPC's own compression.
    assert got["gzip"] == got["half_plus_two"]
    for version, added in (("", 3), ("1", 1), ("canary", 2)):
        answer = got["versions"][version]
        assert answer["model_version"] == str(added)
        assert answer["outputs"]["y"]["values"] == [1.0 + added, 2.0 + added]
    assert got["requested"]["outputs"] == {"twice": {"datatype": "INT64", "shape": [2],
                                                     "values": [6, -8]}}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(("case", "status", "words"), [
    ("unknown_model", NOT_FOUND, "no_such_model"),
    ("unknown_version", NOT_FOUND, "versions"),
    ("datatype", INVALID, "datatype FP64, but the model expects FP32"),
    ("shape", INVALID, "shape"),
])
def test_errors_as_tritonclient_raises_them(answers: dict[str, Any], client: str, case: str,
                                            status: dict[str, str], words: str) -> None:
    got = answers[client]["errors"][case]
    assert got["status"] == status[client]
    assert words in got["message"]
