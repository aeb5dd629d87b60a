"""Live shadowing (--shadow_config_file) between two real servers on loopback.

The baseline is a second onnx-serving process, which speaks TF Serving's gRPC API:
it serves half_plus_three as "hp" (a deliberately different model) and
half_plus_two as "agree"; the front server serves half_plus_two under every name
and shadows the baseline. Clients are tensorflow-serving-api's.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
import requests
import tensorflow as tf
from onnx import numpy_helper
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from onnx_serving.codec.prediction_log import read_prediction_logs
from onnx_serving.codec.tensors import make_ndarray
from onnx_serving.server.api.shadow.config import SwitchRule
from onnx_serving.server.api.shadow.switch import next_mode
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port

TIMEOUT = 20
PREDICT = "/tensorflow.serving.PredictionService/Predict"
HALF_PLUS_TWO = EXAMPLES / "models/half_plus_two"


def half_plus_three(base: Path) -> Path:
    """half_plus_two, every signature included, with y = 0.5x + 3: the version that differs."""
    shutil.copytree(HALF_PLUS_TWO, base)
    model = onnx.load(base / "123" / "model.onnx")
    (offset,) = [i for i in model.graph.initializer if i.name == "y:0_offset"]
    offset.CopyFrom(numpy_helper.from_array(np.array(3.0, np.float32), offset.name))
    onnx.save(model, base / "123" / "model.onnx")
    return base


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def models_config(path: Path, models: dict[str, Path]) -> Path:
    path.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{base}" model_platform: "onnx" }}\n'
        for name, base in models.items()) + "}\n")
    return path


@dataclass
class Setup:
    baseline: ServerProcess
    front: ServerProcess
    rest_port: int
    shadow_file: Path
    logs: Path
    hung: str
    dead: str

    def configure(self, **models: dict[str, Any]) -> None:
        """Rewrites the shadow config (atomically) and waits until the front applied it."""
        entries = {name: {"address": self.baseline.address, **entry}
                   for name, entry in models.items()}
        staged = self.shadow_file.with_suffix(".new")
        staged.write_text(json.dumps({"models": entries}))
        staged.replace(self.shadow_file)
        for name, entry in entries.items():
            wait_for(lambda name=name, entry=entry: self.page(name).get("configured_mode")
                     == entry.get("mode", "shadow") and self.page(name)["baseline"]
                     == entry["address"])

    def page(self, model: str) -> dict[str, Any]:
        answer = requests.get(f"http://127.0.0.1:{self.rest_port}/v1/models/{model}/shadow",
                              timeout=TIMEOUT)
        return dict(answer.json())

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.rest_port}/monitoring/prometheus/metrics",
                            timeout=TIMEOUT).text


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("shadow")
    served = {"hp": half_plus_three(tmp / "hp"), "agree": HALF_PLUS_TWO}
    baseline = ServerProcess(
        [f"--model_config_file={models_config(tmp / 'baseline.config', served)}"],
        tmp / "baseline.log",
    ).start()
    # A baseline that accepts connections and never answers, and one that is not there.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(iter(lambda: hung.accept()[0], None)),
                     daemon=True).start()
    shadow_file = tmp / "shadow.json"
    shadow_file.write_text(json.dumps({"models": {}}))
    monitoring = tmp / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    names = ("hp", "agree", "hung", "dead")
    front_config = models_config(tmp / "front.config", dict.fromkeys(names, HALF_PLUS_TWO))
    front = ServerProcess(
        [f"--model_config_file={front_config}",
         f"--shadow_config_file={shadow_file}", "--shadow_config_file_poll_wait_seconds=1",
         f"--rest_api_port={rest_port}", f"--monitoring_config_file={monitoring}"],
        tmp / "front.log",
    ).start()
    yield Setup(baseline, front, rest_port, shadow_file, tmp / "logs",
                f"127.0.0.1:{hung.getsockname()[1]}", f"127.0.0.1:{free_port()}")
    front.stop()
    baseline.stop()
    hung.close()


def predict_request(model: str, values: list[float], signature: str = "") -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(values, np.float32)))
    return request.SerializeToString()


def raw_predict(server: ServerProcess, request: bytes) -> bytes | tuple[grpc.StatusCode, str]:
    """The answer's bytes as they came over the wire, or the status."""
    with server.channel() as channel:
        call = channel.unary_unary(PREDICT)
        try:
            return bytes(call(request, timeout=TIMEOUT))
        except grpc.RpcError as exc:
            return exc.code(), exc.details()


def examples_requests(model: str) -> tuple[Any, Any, Any]:
    example = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[2.0]))}))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name, classify.model_spec.signature_name = model, "classify_x_to_y"
    classify.input.example_list.examples.add().CopyFrom(example)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = model, "regress_x_to_y"
    regress.input.example_list.examples.add().CopyFrom(example)
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = model, signature
    multi.input.example_list.examples.add().CopyFrom(example)
    return classify, regress, multi


def test_shadow_mode_answers_the_baselines_bytes_and_logs_divergences(
    setup: Setup, tmp_path: Path
) -> None:
    prefix = setup.logs / "hp"
    setup.configure(hp={"mode": "shadow", "log_prefix": str(prefix), "timeout_ms": 10000})
    for values in ([1.0], [2.0, 3.0], [4.0]):
        request = predict_request("hp", values)
        got = raw_predict(setup.front, request)
        assert isinstance(got, bytes)
        assert got == raw_predict(setup.baseline, request)  # byte for byte
        y = make_ndarray(predict_pb2.PredictResponse.FromString(got).outputs["y"])
        np.testing.assert_allclose(y, np.array(values) / 2 + 3)  # the baseline's model
    with setup.front.channel() as channel:  # a client that sets no deadline passes none on
        assert channel.unary_unary(PREDICT)(request) == raw_predict(setup.baseline, request)
    # Its errors too: the same code and message.
    wrong = predict_request("hp", [1.0], signature="missing")
    refused = raw_predict(setup.front, wrong)
    assert isinstance(refused, tuple) and refused == raw_predict(setup.baseline, wrong)
    with setup.front.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        classify, regress, multi = examples_requests("hp")
        assert stub.Classify(classify, timeout=TIMEOUT).result.classifications[0] \
            .classes[0].score == 4.0  # half_plus_three's 0.5 * 2 + 3
        assert stub.Regress(regress, timeout=TIMEOUT).result.regressions[0].value == 4.0
        assert len(stub.MultiInference(multi, timeout=TIMEOUT).results) == 2

    wait_for(lambda: setup.page("hp")["compared"] >= 8)
    page = setup.page("hp")
    assert page["compared"] == 8, page
    assert page["mode"] == "shadow"
    assert page["disagreed"] == 7 and page["agreed"] == 1  # the two refusals agree
    assert page["outputs"]["y"]["max_abs_error"] == 1.0
    assert page["outputs"]["classes/score"]["disagreed"] == 1
    assert page["latency_ms"]["baseline"]["count"] == 8
    assert ':onnx_serving:shadow_comparisons{model_name="hp",version="123",result="disagree"} 7.0' \
        in setup.metrics()
    assert ':onnx_serving:shadow_output_comparisons{model_name="hp",version="123",output="y",' \
        'result="disagree"} 4.0' in setup.metrics()

    # Both answers of each disagreement, paired, in two PredictionLog files.
    def logged(side: str) -> list[Any]:
        paths = sorted(prefix.parent.glob(f"hp-{side}-*.tfrecord"))
        return [r for path in paths for r in read_prediction_logs(path)]

    wait_for(lambda: len(logged("baseline")) == 7 and len(logged("onnx")) == 7)
    baseline, ours = logged("baseline"), logged("onnx")
    first = {"baseline": baseline[0], "onnx": ours[0]}
    assert first["baseline"].log_metadata.request_origin.endswith("baseline")
    assert first["baseline"].log_metadata.request_origin.split()[1] == \
        first["onnx"].log_metadata.request_origin.split()[1]
    x = make_ndarray(first["onnx"].predict_log.request.inputs["x"])
    np.testing.assert_allclose(make_ndarray(first["baseline"].predict_log.response.outputs["y"]),
                               x / 2 + 3)
    np.testing.assert_allclose(make_ndarray(first["onnx"].predict_log.response.outputs["y"]),
                               x / 2 + 2)
    assert {r.WhichOneof("log_type") for r in ours} == {
        "predict_log", "classify_log", "regress_log", "multi_inference_log"}

    # The logged requests replay through compare as they are: the baseline against ours.
    from onnx_serving.migration import compare

    setup.configure(hp={"mode": "off"})
    (log_file,) = sorted(prefix.parent.glob("hp-baseline-*.tfrecord"))
    assert compare.main([
        f"--baseline={setup.baseline.address}", f"--candidate={setup.front.address}",
        "--model_name=hp", f"--requests={log_file}", "--rounds=0",
        f"--report_dir={tmp_path / 'report'}",
    ]) == 1  # they disagree, as the shadow said


@pytest.mark.parametrize("which", ["hung", "dead"])
def test_a_hung_or_dead_baseline_fails_no_candidate_request(setup: Setup, which: str) -> None:
    address = setup.hung if which == "hung" else setup.dead
    setup.configure(**{which: {"mode": "candidate", "address": address, "timeout_ms": 200,
                               "max_in_flight": 4}})
    with setup.front.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for i in range(20):
            request = predict_pb2.PredictRequest.FromString(predict_request(which, [float(i)]))
            y = make_ndarray(stub.Predict(request, timeout=TIMEOUT).outputs["y"])
            np.testing.assert_allclose(y, [i / 2 + 2])  # ours
    reason = "baseline_timeout" if which == "hung" else "baseline_unavailable"
    wait_for(lambda: sum(setup.page(which)["drops"].values()) == 20)
    page = setup.page(which)
    assert page["compared"] == 0
    assert set(page["drops"]) <= {reason, "in_flight"} and page["drops"].get(reason)


def test_mode_switches_by_reload_under_load_fail_no_request(setup: Setup) -> None:
    setup.configure(agree={"mode": "shadow"})
    stop = threading.Event()
    failures: list[BaseException] = []
    answered = [0]

    def load() -> None:
        with setup.front.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set():
                request = predict_pb2.PredictRequest.FromString(predict_request("agree", [1.0]))
                try:
                    y = make_ndarray(stub.Predict(request, timeout=TIMEOUT).outputs["y"])
                    assert y.tolist() == [2.5]
                    answered[0] += 1
                except (grpc.RpcError, AssertionError) as exc:
                    failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for mode in ("candidate", "off", "shadow", "candidate", "shadow"):
            before = answered[0]
            setup.configure(agree={"mode": mode})
            wait_for(lambda before=before: answered[0] > before + 20)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures
    page = setup.page("agree")
    assert page["compared"] > 0 and page["disagreed"] == 0
    assert setup.page("dead_or_alive") == {"error": "Model dead_or_alive is not shadowed"}


def test_the_automatic_switch_reverses_when_agreement_falls(setup: Setup) -> None:
    setup.configure(hp={"mode": "candidate",
                        "switch": {"after": 10, "min_agreement": 0.9, "revert_below": 0.8}})
    with setup.front.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest.FromString(predict_request("hp", [1.0]))
        for _ in range(3):
            stub.Predict(request, timeout=TIMEOUT)
    wait_for(lambda: setup.page("hp")["mode"] == "shadow")  # 3 of 10 disagreeing > 2
    assert "switched to shadow by the automatic rule: 3 of the last 3 compared requests " \
        "disagreed" in setup.front.logs()
    assert setup.page("hp")["configured_mode"] == "candidate"


RULE = SwitchRule(after=4, min_agreement=0.75, revert_below=0.5)


@pytest.mark.parametrize(("mode", "verdicts", "ours", "theirs", "expected"), [
    ("shadow", [True] * 3, 0.001, 0.002, None),  # too few compared yet
    ("shadow", [True] * 4, 0.001, 0.002, "candidate"),
    ("shadow", [True, True, True, False], 0.001, 0.002, "candidate"),  # 0.75 agreement
    ("shadow", [True, True, False, False], 0.001, 0.002, None),
    ("shadow", [True] * 4, 0.003, 0.002, None),  # our p99 is worse
    ("candidate", [False, False], None, None, None),  # 2 of 4 allowed
    ("candidate", [False, False, False], None, None, "shadow"),
    ("candidate", [True] * 4, 0.001, 0.002, None),
    ("off", [False] * 4, None, None, None),
])
def test_the_switch_rule(mode: Any, verdicts: list[bool], ours: float | None,
                         theirs: float | None, expected: str | None) -> None:
    moved = next_mode(mode, RULE, verdicts, ours, theirs)
    assert (moved[0] if moved else None) == expected
