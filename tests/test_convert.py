"""`onnx-serving convert` on real SavedModels with the real tf2onnx, then served and queried
with the real tensorflow-serving-api client, exactly as a TF Serving client would."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests import saved_models
from tests.saved_models import convert
from tests.server_process import ServerProcess

BUILDERS: dict[str, Callable[[Path], None]] = {
    "multi": saved_models.multi_signature,
    "named": saved_models.keras_named_inputs,
    "cnn": saved_models.small_cnn,
    "lstm": saved_models.lstm,
    "transformer": saved_models.transformer_block,
}


def signature_defs(version_dir: Path) -> dict[str, object]:
    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    return {k: v for k, v in saved.meta_graphs[0].signature_def.items()
            if not k.startswith("__")}


def random_inputs(signature: object, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {}
    for alias, info in signature.inputs.items():  # type: ignore[attr-defined]
        shape = [2 if d.size < 0 else d.size for d in info.tensor_shape.dim]
        dtype = tf.dtypes.as_dtype(info.dtype)
        if dtype == tf.string:
            inputs[alias] = np.array([f"é{i}\x00x".encode() for i in range(np.prod(shape))],
                                     dtype=object).reshape(shape)
        elif dtype.is_integer:
            inputs[alias] = rng.integers(0, 5, size=shape).astype(dtype.as_numpy_dtype)
        else:
            inputs[alias] = rng.standard_normal(shape).astype(dtype.as_numpy_dtype)
    return inputs


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SavedModels under saved/, converted into onnx/ by the CLI, one model at a time."""
    root = tmp_path_factory.mktemp("migration")
    for name, build in BUILDERS.items():
        build(root / "saved" / name / "1")
    x = np.ones((1, 3), np.float32)
    saved_models.add_warmup(root / "saved" / "multi" / "1", {"x": x})
    for name in BUILDERS:
        result = convert(root / "saved" / name, root / "onnx" / name)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"| {name} | 1 | converted |" in result.stdout
    return root


@pytest.fixture(scope="module")
def served(repository: Path) -> Iterator[grpc.Channel]:
    config = repository / "onnx.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{repository / "onnx" / n}" }}' for n in BUILDERS
    ) + " }")
    server = ServerProcess([f"--model_config_file={config}"], repository / "server.log").start()
    with grpc.insecure_channel(server.address) as channel:
        yield channel
    server.stop()


CASES = [(model, signature) for model, signatures in {
    "multi": ["serving_default", "strings"], "named": ["serving_default", "serve"],
    "cnn": ["serving_default"], "lstm": ["serving_default"], "transformer": ["serving_default"],
}.items() for signature in signatures]


@pytest.mark.parametrize(("model", "signature"), CASES)
def test_served_answers_match_tensorflow(repository, served, model, signature) -> None:
    """The same request a TF Serving client sends, answered as TensorFlow answers it."""
    version_dir = repository / "saved" / model / "1"
    definition = signature_defs(version_dir)[signature]
    inputs = random_inputs(definition)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    response = prediction_service_pb2_grpc.PredictionServiceStub(served).Predict(request, 60)
    expected = tf.saved_model.load(str(version_dir)).signatures[signature](
        **{k: tf.constant(v) for k, v in inputs.items()}
    )
    assert set(response.outputs) == set(expected)
    for alias, tensor in expected.items():
        got = tf.make_ndarray(response.outputs[alias])
        if tensor.dtype == tf.string:
            assert got.tolist() == tensor.numpy().tolist()
        else:
            np.testing.assert_allclose(got, tensor.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", ["multi", "named"])
def test_metadata_looks_as_under_tf_serving(repository, served, model) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model
    response = prediction_service_pb2_grpc.PredictionServiceStub(served).GetModelMetadata(
        request, 30
    )
    ours = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(ours)
    theirs = signature_defs(repository / "saved" / model / "1")
    assert set(ours.signature_def) == set(theirs)
    for name, signature in theirs.items():
        converted = ours.signature_def[name]
        assert converted.method_name == signature.method_name
        for side in ("inputs", "outputs"):
            mine, original = getattr(converted, side), getattr(signature, side)
            assert set(mine) == set(original)
            for alias, info in original.items():
                assert mine[alias].dtype == info.dtype
                assert mine[alias].tensor_shape == info.tensor_shape


def test_keras3_export_stores_its_weights_once(repository) -> None:
    """Keras 3's serve and serving_default are one function: one ONNX file serves both
    (test_served_answers_match_tensorflow asks each of them)."""
    version = repository / "onnx" / "named" / "1"
    entries = json.loads((version / "signatures.json").read_text())["signature_def"]
    assert {e["model_file"] for e in entries.values()} == {"model.onnx"}
    assert [p.name for p in version.glob("*.onnx")] == ["model.onnx"]


def test_warmup_file_is_carried_over_and_used_for_validation(repository) -> None:
    saved = repository / "saved" / "multi" / "1" / "assets.extra" / "tf_serving_warmup_requests"
    onnx_copy = repository / "onnx" / "multi" / "1" / "assets.extra" / "tf_serving_warmup_requests"
    assert onnx_copy.read_bytes() == saved.read_bytes()
    result = convert(repository / "saved" / "multi", repository / "rerun",
                     "--signatures=serving_default")
    assert "signature serving_default: 1 warmup inputs" in result.stderr


def test_rerun_skips_finished_versions_unless_overwrite(repository) -> None:
    result = convert(repository / "saved" / "cnn", repository / "onnx" / "cnn")
    assert result.returncode == 0 and "| cnn | 1 | skipped |" in result.stdout
    before = (repository / "onnx" / "cnn" / "1" / "model.onnx").stat().st_mtime_ns
    result = convert(repository / "saved" / "cnn", repository / "onnx" / "cnn", "--overwrite")
    assert result.returncode == 0 and "| cnn | 1 | converted |" in result.stdout
    assert (repository / "onnx" / "cnn" / "1" / "model.onnx").stat().st_mtime_ns != before


def test_unconvertible_signature_is_named_and_the_rest_converts(tmp_path: Path) -> None:
    saved_models.multi_signature(tmp_path / "saved" / "1", with_unconvertible=True)
    saved_models.multi_signature(tmp_path / "saved" / "2")
    result = convert(tmp_path / "saved", tmp_path / "onnx", "--model_name=m")
    assert result.returncode == 1
    assert "| m | 1 | failed |" in result.stdout and "| m | 2 | converted |" in result.stdout
    assert "- m/1: signature bessel:" in result.stdout and "BesselI0e" in result.stdout
    assert not (tmp_path / "onnx" / "1").exists() and (tmp_path / "onnx" / "2").is_dir()
    result = convert(tmp_path / "saved", tmp_path / "onnx", "--model_name=m", "--allow_partial")
    assert result.returncode == 1
    assert "| m | 1 | partial | serving_default, strings |" in result.stdout
    signatures = json.loads((tmp_path / "onnx" / "1" / "signatures.json").read_text())
    assert set(signatures["signature_def"]) == {"serving_default", "strings"}


def test_model_config_with_two_models_and_labels(repository, tmp_path: Path) -> None:
    config = tmp_path / "tf_serving.config"
    config.write_text(f"""
model_config_list {{
  config {{ name: "multi" base_path: "{repository / 'saved' / 'multi'}"
           model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 }} }}
           version_labels {{ key: "stable" value: 1 }} }}
  config {{ name: "named" base_path: "{repository / 'saved' / 'named'}"
           model_platform: "tensorflow" }}
}}""")
    result = convert(f"--model_config_file={config}", f"--output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-2000:]
    written = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((tmp_path / "out" / "models.config").read_text(), written)
    multi, named = written.model_config_list.config
    assert (multi.base_path, multi.model_platform) == (str(tmp_path / "out" / "multi"), "onnx")
    assert list(multi.model_version_policy.specific.versions) == [1]
    assert dict(multi.version_labels) == {"stable": 1}
    assert named.base_path == str(tmp_path / "out" / "named")
    server = ServerProcess([f"--model_config_file={tmp_path / 'out' / 'models.config'}"],
                           tmp_path / "server.log").start()
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "multi"
        request.model_spec.version_label = "stable"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 3), np.float32)))
        with grpc.insecure_channel(server.address) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, 30
            )
        assert response.model_spec.version.value == 1
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [[1.9, 2.2, 2.5]],
                                   rtol=1e-6)
    finally:
        server.stop()


def test_disagreement_beyond_tolerance_is_not_written(repository, tmp_path: Path) -> None:
    result = convert(repository / "saved" / "cnn", tmp_path / "cnn", "--fp16",
                     "--atol=0", "--rtol=0")
    assert result.returncode == 1
    assert "disagrees with TensorFlow beyond atol 0.0 / rtol 0.0" in result.stdout
    assert not (tmp_path / "cnn" / "1").exists()


def test_optimize_and_quantize_report_their_accuracy(repository, tmp_path: Path) -> None:
    result = convert(repository / "saved" / "cnn", tmp_path / "cnn", "--optimize",
                     "--quantize=dynamic", "--atol=0.05")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| cnn | 1 |"))
    max_abs = float(row.split("|")[5])
    assert 0 < max_abs <= 0.05  # int8 weights: close, not identical


def test_large_model_layout_converts_and_serves(repository, tmp_path: Path) -> None:
    """--large_model (weights as external files, for models over 2 GB) on a small model."""
    result = convert(repository / "saved" / "cnn", tmp_path / "cnn", "--large_model")
    assert result.returncode == 0, result.stderr[-2000:]
    version = tmp_path / "cnn" / "1"
    assert (version / "model.onnx").is_file() and not (version / "__MODEL_PROTO.onnx").exists()
    server = ServerProcess([f"--model_base_path={tmp_path / 'cnn'}", "--model_name=cnn"],
                           tmp_path / "server.log").start()
    try:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "cnn"
        request.inputs["image"].CopyFrom(
            tf.make_tensor_proto(np.zeros((1, 32, 32, 3), np.float32)))
        with grpc.insecure_channel(server.address) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, 30)
        assert tf.make_ndarray(response.outputs["output_0"]).shape == (1, 10)
    finally:
        server.stop()
