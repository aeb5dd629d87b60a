"""What `onnx-serving convert` publishes and writes: one ONNX file for signatures over one
function, no version whose warmup the server would refuse, the served models.config left
alone unless asked (and written atomically when asked), and a quiet log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests import saved_models
from tests.saved_models import convert

# What TensorFlow printed on every run on a machine without a GPU.
NOISE = ("cuInit", "deprecated")


def _quiet(stderr: str) -> None:
    for noise in NOISE:
        assert noise not in stderr, stderr[-3000:]


def test_keras3_serve_and_serving_default_convert_once(tmp_path: Path) -> None:
    """Keras 3 exports serve and serving_default over one function; tf2onnx's two
    conversions of a real network differ in generated names, so comparing files found
    nothing to share. The signatures' function is compared, and one file serves both."""
    saved_models.small_mobilenet(tmp_path / "saved" / "1")
    result = convert(tmp_path / "saved", tmp_path / "onnx", "--model_name=mobilenet",
                     "--validation_samples=2")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "| mobilenet | 1 | converted | serve, serving_default |" in result.stdout
    version = tmp_path / "onnx" / "1"
    entries = json.loads((version / "signatures.json").read_text())["signature_def"]
    assert {name: e["model_file"] for name, e in entries.items()} == {
        "serve": "model.onnx", "serving_default": "model.onnx"}
    assert [p.name for p in version.glob("*.onnx")] == ["model.onnx"]
    assert "signature serving_default computes what serve does: it shares model.onnx" \
        in result.stderr
    assert "signature serving_default: 2 random inputs" in result.stderr  # still validated
    _quiet(result.stderr)


def test_warmup_the_server_would_refuse_is_not_published(tmp_path: Path) -> None:
    """Warmup records are replayed with the server's own load and warmup before a version
    is published: a record naming an input the signature does not have (Keras' renumbered
    `keras_tensor`) was skipped by validation, and the server then refused the version."""
    saved = tmp_path / "saved"
    bad = {1: {"input": np.ones((1, 3), np.float32)},    # not the signature's key
           2: {"x": np.ones((1, 4), np.float32)}}        # not its shape
    for version in (1, 2, 3):
        saved_models.multi_signature(saved / str(version))
        saved_models.add_warmup(saved / str(version),
                                bad.get(version, {"x": np.ones((2, 3), np.float32)}))
    result = convert(saved, tmp_path / "onnx", "--model_name=m", "--signatures=serving_default")
    assert result.returncode == 1
    assert "| m | 1 | failed |" in result.stdout and "| m | 2 | failed |" in result.stdout
    assert "| m | 3 | converted |" in result.stdout
    warmup = saved / "1" / "assets.extra" / "tf_serving_warmup_requests"
    assert (f"- m/1: its warmup requests do not fit the converted signatures, so the server "
            f"would refuse the version: warmup record 0 of {warmup} failed: Signature input "
            "alias: x(feed name: ") in result.stdout
    assert f"Correct or remove {warmup}" in result.stdout
    assert "- m/2: " in result.stdout
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["3"]


def _tf_config(path: Path, saved: Path) -> Path:
    path.write_text(f"""
model_config_list {{
  config {{ name: "multi" base_path: "{saved}" model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 }} }}
           version_labels {{ key: "stable" value: 1 }} }}
}}""")
    return path


def test_served_config_changes_only_when_asked_and_atomically(tmp_path: Path) -> None:
    """A server polls models.config: convert leaves an existing one alone and suggests its
    change beside it; --update_config writes it by rename (a new inode, never half a
    file), keeping the other models and the fields the TF Serving config does not set."""
    saved_models.multi_signature(tmp_path / "saved" / "multi" / "1")
    tf_config = _tf_config(tmp_path / "tf.config", tmp_path / "saved" / "multi")
    out = tmp_path / "out"
    served = out / "models.config"
    out.mkdir()
    served.write_text(f"""
model_config_list {{
  config {{ name: "other" base_path: "/models/other" model_platform: "onnx" }}
  config {{ name: "multi" base_path: "{out / 'multi'}" model_platform: "onnx"
           logging_config {{ sampling_config {{ sampling_rate: 0.5 }} }} }}
}}""")
    served.chmod(0o640)
    before, inode = served.read_text(), served.stat().st_ino
    args = (f"--model_config_file={tf_config}", f"--output_dir={out}",
            "--signatures=serving_default")

    result = convert(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (served.read_text(), served.stat().st_ino) == (before, inode)
    suggested = out / "models.config.suggested"
    assert f"left {served} as it is" in result.stderr and str(suggested) in result.stderr
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(suggested.read_text(), config)
    other, multi = config.model_config_list.config
    assert (other.name, other.base_path) == ("other", "/models/other")
    assert (multi.name, multi.base_path, multi.model_platform) == (
        "multi", str(out / "multi"), "onnx")
    assert list(multi.model_version_policy.specific.versions) == [1]
    assert dict(multi.version_labels) == {"stable": 1}
    assert multi.logging_config.sampling_config.sampling_rate == 0.5  # kept from the file

    result = convert(*args, "--update_config")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| multi | 1 | skipped |" in result.stdout
    assert f"updated {served} (--update_config)" in result.stderr
    assert served.read_text() == suggested.read_text()
    assert served.stat().st_ino != inode  # renamed in, not rewritten in place
    assert served.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in out.iterdir()) == [
        "models.config", "models.config.suggested", "multi"]  # no temporary file left

    result = convert(*args)
    assert f"{served} already serves the converted models as they are" in result.stderr
    _quiet(result.stderr)


def test_update_config_needs_a_model_config_file(tmp_path: Path) -> None:
    result = convert(tmp_path / "saved", tmp_path / "onnx", "--update_config")
    assert result.returncode == 2
    assert "--update_config goes with --model_config_file" in result.stderr
