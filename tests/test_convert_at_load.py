"""A TF Serving repository served as it is: SavedModel versions converted at load
(server/repository/conversion.py), in a child process, validated as ``onnx-serving
convert`` validates, cached by content, loaded like any version; a failed conversion keeps
what serves. Real server processes, real SavedModels written by TensorFlow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from onnx_serving.client import Client, VersionStatus
from onnx_serving.migration.saved_model import TensorFlowRunner
from tests import saved_models
from tests.saved_models import HALF_PLUS_TWO_VERSION
from tests.server_process import ServerProcess
from tests.test_convert_tf1 import example
from tests.test_lifecycle import Stream, Traffic, wait_for

OFFSETS = {1: 2.0, 2: 3.0}  # version → b of y = 0.5 x + b
X = np.array([1.0], np.float32)
CONVERTING = "Converting the TensorFlow SavedModel in"
CACHED = "from its ONNX conversion cached at"


class HalfPlus(tf.Module):
    """TF Serving's half_plus_two as a TF2 ``tf.Module``: y = a x + b, with variables."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(offset)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}


def write_version(base: Path, version: int, build: object) -> Path:
    """Written beside the base path's versions and renamed in whole (docs/lifecycle.md)."""
    staging = base / f".staging-{version}"
    build(staging)  # type: ignore[operator]
    target = base / str(version)
    staging.rename(target)
    return target


def half_plus(offset: float) -> object:
    def build(path: Path) -> None:
        module = HalfPlus(offset)
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return build


def corrupt(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"not a SavedModel")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion cache for the module: version 1 converts once, then comes cached."""
    return tmp_path_factory.mktemp("converted")


def serve(base: Path, cache: Path, log: Path, *flags: str) -> ServerProcess:
    return ServerProcess([
        "--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
        f"--saved_model_cache_dir={cache}", *flags,
    ], log).start(timeout=300)


def lone_status(base: Path, cache: Path, log: Path, *flags: str) -> tuple[VersionStatus, str]:
    """The status of the one version a server started with ``flags`` (no load retries)
    reports once it is up, and the server's log."""
    server = serve(base, cache, log, *flags, "--max_num_load_retries=0")
    try:
        with Client(server.address) as client:
            [status] = client.status("m")
    finally:
        server.stop()
    return status, server.logs()


@pytest.fixture
def served(tmp_path: Path, cache: Path) -> Iterator[tuple[ServerProcess, Path]]:
    base = tmp_path / "m"
    base.mkdir()
    write_version(base, 1, half_plus(OFFSETS[1]))
    server = serve(base, cache, tmp_path / "server.log", "--max_num_load_retries=0")
    yield server, base
    server.stop()


def tensorflow_answer(version_dir: Path, x: np.ndarray) -> np.ndarray:
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return signature(x=tf.constant(x))["y"].numpy()


def states(client: Client) -> dict[int, str]:
    return {s.version: s.state for s in client.status("m")}


def stream() -> Stream:
    return Stream("m", inputs={"x": X}, expect=lambda version: float(0.5 * X[0] + OFFSETS[version]))


def test_a_savedmodel_written_under_traffic_is_converted_and_served(served) -> None:
    server, base = served
    with Client(server.address) as client, Traffic(server.address, stream()) as traffic:
        assert states(client) == {1: "AVAILABLE"}
        wait_for(lambda: traffic.count() > 20)
        version_dir = write_version(base, 2, half_plus(OFFSETS[2]))
        seen: list[dict[int, str]] = []

        def converted() -> bool:
            seen.append(states(client))
            return seen[-1].get(2) == "AVAILABLE"

        wait_for(converted, timeout=300)
        wait_for(lambda: traffic.count() > 0 and traffic.latest() == 2)
        x = np.linspace(-3, 3, 7, dtype=np.float32)
        got = client.predict("m", {"x": x})["y"]
    assert not traffic.errors, traffic.errors[:5]
    # LOADING while it converted, with version 1 serving throughout.
    assert {2: "LOADING", 1: "AVAILABLE"} in seen
    np.testing.assert_array_equal(got, tensorflow_answer(version_dir, x))
    assert f"{CONVERTING} {version_dir}" in server.logs()


@pytest.mark.parametrize(("build", "reason"), [
    pytest.param(lambda p: saved_models.multi_signature(p, with_unconvertible=True),
                 "signature bessel: tf2onnx left operators ONNX Runtime cannot run; "
                 "unsupported ops: BesselI0e", id="unconvertible-op"),
    pytest.param(corrupt, "saved_model.pb is not a SavedModel: Error parsing message",
                 id="corrupt-saved_model.pb"),
])
def test_a_failed_conversion_keeps_what_serves(served, build, reason) -> None:
    server, base = served
    with Client(server.address) as client, Traffic(server.address, stream()) as traffic:
        write_version(base, 2, build)
        wait_for(lambda: states(client).get(2) == "END", timeout=300)
        [status] = [s for s in client.status("m") if s.version == 2]
        wait_for(lambda: traffic.count() > 0)
        assert states(client) == {2: "END", 1: "AVAILABLE"}
        assert traffic.latest() == 1
    assert not traffic.errors, traffic.errors[:5]
    assert "to ONNX failed, so it is not served" in status.error_message
    assert "onnx-serving convert's log" in status.error_message
    assert reason in status.error_message
    assert status.error_message in server.logs()


def test_the_cache_is_reused_across_a_restart(tmp_path: Path) -> None:
    base, cache = tmp_path / "m", tmp_path / "cache"
    base.mkdir()
    write_version(base, 1, half_plus(OFFSETS[1]))
    answers = []
    for start in ("first", "second"):
        server = serve(base, cache, tmp_path / f"{start}.log")
        try:
            with Client(server.address) as client:
                assert states(client) == {1: "AVAILABLE"}
                answers.append(client.predict("m", {"x": X})["y"])
        finally:
            server.stop()
        logs = server.logs()
        if start == "first":
            assert CONVERTING in logs and CACHED not in logs
        else:  # a restart, or a second replica sharing the cache: no conversion
            assert CACHED in logs and CONVERTING not in logs
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_array_equal(answers[0], tensorflow_answer(base / "1", X))


def test_conversion_turned_off_says_how_to_convert(tmp_path: Path) -> None:
    base = tmp_path / "m"
    base.mkdir()
    write_version(base, 1, half_plus(OFFSETS[1]))
    status, logs = lone_status(base, tmp_path / "cache", tmp_path / "server.log",
                               "--convert_saved_models=false")
    assert status.state == "END"
    assert "holds a TensorFlow SavedModel, and --convert_saved_models=false" in \
        status.error_message
    assert f"`onnx-serving convert {base} {base}_onnx`" in status.error_message
    assert CONVERTING not in logs


def test_keras_and_tf1_exports_written_while_serving_answer_as_tensorflow(
    tmp_path: Path, cache: Path
) -> None:
    """What training pipelines write: Keras' ``model.export`` and a TF1 SavedModelBuilder
    export (TF Serving's half_plus_two, tf.Example signatures), each appearing in a base
    path the server already serves; Predict, Classify and Regress answer as TensorFlow."""
    bases = {name: tmp_path / name for name in ("keras", "half_plus_two")}
    for base in bases.values():
        base.mkdir()
    config = tmp_path / "models.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}'
        for name, base in bases.items()) + " }")
    server = ServerProcess([
        f"--model_config_file={config}", "--file_system_poll_wait_seconds=1",
        f"--saved_model_cache_dir={cache}", "--max_num_load_retries=0",
    ], tmp_path / "server.log").start()
    try:
        keras_dir = write_version(bases["keras"], 1, saved_models.keras_named_inputs)
        tf1_dir = write_version(bases["half_plus_two"], HALF_PLUS_TWO_VERSION,
                                saved_models.half_plus_two)
        with Client(server.address) as client:
            for name in bases:
                wait_for(lambda name=name: [s.state for s in client.status(name)] ==
                         ["AVAILABLE"], timeout=300)
            features = np.array([[1.0, -2.0, 3.0, 0.5], [0.0, 4.0, -1.0, 2.0]], np.float32)
            mask = np.array([[1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 1.0]], np.float32)
            keras_got = client.predict("keras", {"features": features, "mask": mask})
            x = np.array([[1.0], [-3.0], [5.5]], np.float32)
            predict_got = client.predict("half_plus_two", {"x": x})
        examples = [example(x=[1.0]), example(x=[4.0], x2=[6.0]), example(x=[-2.5])]
        with server.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            classify = classification_pb2.ClassificationRequest()
            regress = regression_pb2.RegressionRequest()
            for request, signature in ((classify, "classify_x_to_y"), (regress, "regress_x_to_y")):
                request.model_spec.name = "half_plus_two"
                request.model_spec.signature_name = signature
                for serialized in examples:
                    request.input.example_list.examples.add().ParseFromString(serialized)
            classes = stub.Classify(classify, 30).result.classifications
            regressions = stub.Regress(regress, 30).result.regressions
    finally:
        server.stop()
    keras_expected = TensorFlowRunner(keras_dir).run(
        "serving_default", {"features": features, "mask": mask})
    assert set(keras_got) == set(keras_expected)
    for alias, value in keras_expected.items():
        np.testing.assert_allclose(keras_got[alias], value, rtol=1e-5, atol=1e-5)
    tensorflow = TensorFlowRunner(tf1_dir)
    np.testing.assert_array_equal(predict_got["y"],
                                  tensorflow.run("serving_default", {"x": x})["y"])
    serialized = np.array(examples, dtype=object)
    scores = tensorflow.run("classify_x_to_y", {"inputs": serialized})["scores"]
    assert [[c.score for c in one.classes] for one in classes] == scores.tolist()
    outputs = tensorflow.run("regress_x_to_y", {"inputs": serialized})["outputs"]
    assert [[r.value] for r in regressions] == outputs.tolist()
    logs = server.logs()
    assert f"{CONVERTING} {keras_dir}" in logs and f"{CONVERTING} {tf1_dir}" in logs


def test_a_conversion_over_its_timeout_is_stopped_and_frees_the_load_thread(
    tmp_path: Path
) -> None:
    """A hung conversion must not hold a load thread for ever: one longer than
    --saved_model_conversion_timeout_seconds (here 1 s, less than TensorFlow takes to
    import) is killed, and its version fails to load saying so. The server becomes ready
    (start-up waits for that load) and publishes nothing in the cache."""
    base, cache = tmp_path / "m", tmp_path / "cache"
    base.mkdir()
    version_dir = write_version(base, 1, half_plus(OFFSETS[1]))
    status, _ = lone_status(base, cache, tmp_path / "server.log",
                            "--saved_model_conversion_timeout_seconds=1")
    assert status.state == "END"
    assert (f"Converting the TensorFlow SavedModel in {version_dir} to ONNX failed: it ran "
            "longer than --saved_model_conversion_timeout_seconds=1 and was stopped"
            in status.error_message)
    assert [p.suffix for p in cache.iterdir()] == [".log"]  # no conversion, no partial one
