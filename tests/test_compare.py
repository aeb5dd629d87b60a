"""`onnx-serving compare` against two real onnx-serving processes.

Both servers serve one repository of small models built here with onnx.helper; the
"perturbed" versions and models differ on purpose, so disagreement is real. Latency
phases are a fraction of a second: these tests check the plumbing, never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_serving.migration.compare import main
from onnx_serving.migration.compare_agreement import Agreement, Tolerance, compare_outputs
from onnx_serving.migration.compare_requests import Request, SideError
from tests.models import add_constant, identity, two_outputs
from tests.server_process import ServerProcess, free_port

QUICK = ["--rounds=0"]  # agreement only
SHORT_LATENCY = ["--rounds=2", "--duration_seconds=0.2", "--concurrency=2"]


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> Any:
    graph = helper.make_graph(nodes, "compare", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def scaled_scores(factor: float) -> onnx.ModelProto:
    """Class scores: scores = x * factor, x float [n, 5]. A negative factor reverses ranks."""
    return _model(
        [helper.make_node("Mul", ["x", "f"], ["scores"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(np.array(factor, np.float32), "f")],
    )


def affine(slope: float, offset: float) -> onnx.ModelProto:
    """y = slope * x + offset, named after the SavedModel signature's keys x and y."""
    return _model(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        [numpy_helper.from_array(np.array(slope, np.float32), "a"),
         numpy_helper.from_array(np.array(offset, np.float32), "b")],
    )


MODELS: dict[str, dict[int, onnx.ModelProto]] = {
    # Version 2 is the perturbed one: y = x + 1.001 against x + 1.
    "m": {1: add_constant(1.0), 2: add_constant(1.001)},
    "scores": {1: scaled_scores(1.0)},
    "scores_doubled": {1: scaled_scores(2.0)},
    "scores_reversed": {1: scaled_scores(-1.0)},
    "multi": {1: two_outputs()},
    "strings": {1: identity(TensorProto.STRING, ["n"])},
    "affine": {1: affine(2.0, 1.0)},
    "affine_off": {1: affine(2.0, 1.01)},
}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare_models")
    entries = []
    for name, versions in MODELS.items():
        for version, model in versions.items():
            (root / name / str(version)).mkdir(parents=True)
            onnx.save(model, root / name / str(version) / "model.onnx")
        extra = ""
        if name == "m":
            extra = ('model_version_policy { all {} } '
                     'version_labels { key: "stable" value: 1 } '
                     'version_labels { key: "canary" value: 2 }')
        entries.append(
            f'config {{ name: "{name}" base_path: "{root / name}" model_platform: "onnx" {extra} }}'
        )
    path = root / "models.config"
    path.write_text("model_config_list {\n" + "\n".join(entries) + "\n}\n")
    return path


def _serve(config: Path, log: Path) -> Iterator[ServerProcess]:
    process = ServerProcess([f"--model_config_file={config}"], log).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def baseline(config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _serve(config, tmp_path_factory.mktemp("logs") / "baseline.log")


@pytest.fixture(scope="module")
def candidate(config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _serve(config, tmp_path_factory.mktemp("logs") / "candidate.log")


def _compare(
    baseline: ServerProcess | None, candidate: ServerProcess, report: Path, *flags: str
) -> tuple[int, dict[str, Any]]:
    argv = [f"--candidate={candidate.address}", f"--report_dir={report}", *flags]
    if baseline is not None:
        argv.append(f"--baseline={baseline.address}")
    code = main(argv)
    return code, json.loads((report / "report.json").read_text())


def _output(report: dict[str, Any], alias: str) -> dict[str, Any]:
    return next(o for o in report["outputs"] if o["alias"] == alias)


# --- two servers --------------------------------------------------------------------------


def test_same_model_on_two_servers_agrees(
    baseline: ServerProcess, candidate: ServerProcess, tmp_path: Path
) -> None:
    """Run as the module, as a CI job would, with a short latency phase."""
    result = subprocess.run(
        [sys.executable, "-m", "onnx_serving.migration.compare",
         f"--baseline={baseline.address}", f"--candidate={candidate.address}",
         "--model_name=m", "--baseline_version=1", "--candidate_version=1",
         f"--report_dir={tmp_path}", *SHORT_LATENCY],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agreement: PASS" in result.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"report.md", "report.json", "latency.png"}
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["agreement"] is True
    y = _output(report, "y")
    assert y["passed"] and y["max_abs_error"] == 0 and y["mismatched_elements"] == 0
    assert report["requests"] == {"source": "generated", "count": 16, "answered_by_both": 16,
                                  "notes": []}
    latency = report["latency"]
    assert latency["order"] == ["baseline", "candidate", "candidate", "baseline"]
    for side in ("baseline", "candidate"):
        assert latency[side]["requests"] > 0 and latency[side]["errors"] == 0
        assert 0 < latency[side]["p50_ms"] <= latency[side]["p95_ms"] <= latency[side]["p99_ms"]
        assert report["sides"][side]["versions_answered"] == [1]
    assert latency["ratio"]["p50_ms"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "Agreement: PASS" in markdown and "![Latency distribution" in markdown
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


def test_perturbed_candidate_fails_and_names_the_output(
    baseline: ServerProcess, candidate: ServerProcess, tmp_path: Path
) -> None:
    code, report = _compare(baseline, candidate, tmp_path, "--model_name=m",
                            "--baseline_version=1", "--candidate_version=2",
                            "--iterations=5", "--format=html")
    assert code == 1
    assert report["agreement"] is False
    y = _output(report, "y")
    assert not y["passed"]
    assert y["max_abs_error"] == pytest.approx(0.001, abs=1e-5)
    # 0.001 off is within rtol 1e-3 where |y| >= 0.9: only the smaller values fail.
    assert 0 < y["mismatched_elements"] < y["elements"] == 16
    worst = y["worst"]  # the largest error among elements outside tolerance
    assert worst["candidate"] - worst["baseline"] == pytest.approx(0.001, abs=1e-5)
    assert abs(worst["baseline"]) < 0.9  # where rtol no longer covers 0.001
    assert report["latency"]["baseline"]["requests"] == 10  # --iterations=5, two rounds
    page = (tmp_path / "report.html").read_text()
    assert "Agreement: FAIL" in page and "<code>y</code>" in page and "1.00e-03" in page
    assert 'src="data:image/png;base64,' in page  # the plot travels inside the page


def test_versions_by_label(baseline: ServerProcess, tmp_path: Path) -> None:
    """Two versions of one model on one server, chosen by label: a canary check."""
    code, report = _compare(baseline, baseline, tmp_path, "--model_name=m",
                            "--baseline_label=stable", "--candidate_label=canary", *QUICK)
    assert code == 1
    assert report["sides"]["baseline"]["versions_answered"] == [1]
    assert report["sides"]["candidate"]["versions_answered"] == [2]
    assert report["latency"] is None
    assert "Not measured." in (tmp_path / "report.md").read_text()


def test_requests_from_npz(
    baseline: ServerProcess, candidate: ServerProcess, tmp_path: Path
) -> None:
    stacked = tmp_path / "stacked.npz"
    np.savez(stacked, x=np.arange(12, dtype=np.float32).reshape(3, 4, 1))  # 3 requests of [4, 1]
    code, report = _compare(baseline, candidate, tmp_path / "stacked", "--model_name=m",
                            f"--requests={stacked}", *QUICK)
    assert code == 0
    assert report["requests"]["count"] == 3 and report["requests"]["source"] == str(stacked)
    assert _output(report, "y")["shape"] == [4, 1]

    single = tmp_path / "single.npz"
    np.savez(single, a=np.ones((2, 3), np.float32), b=np.array([4, 5], np.int64))
    code, report = _compare(baseline, candidate, tmp_path / "single", "--model_name=multi",
                            f"--requests={single}", *QUICK)
    assert code == 0
    assert report["requests"]["count"] == 1
    assert {o["alias"]: o["check"] for o in report["outputs"]} == {
        "sum": "tolerance", "twice": "exact"}


def test_requests_from_a_prediction_log_written_by_tensorflow(
    baseline: ServerProcess, candidate: ServerProcess, tmp_path: Path
) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2,
        predict_pb2,
        prediction_log_pb2,
    )

    path = tmp_path / "tf_serving_warmup_requests"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(4):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            request.inputs["x"].CopyFrom(
                tf.make_tensor_proto(np.full((i + 1, 1), i - 1.5, np.float32)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
        classify = prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(
                request=classification_pb2.ClassificationRequest()))
        writer.write(classify.SerializeToString())

    code, report = _compare(baseline, candidate, tmp_path / "report", "--model_name=m",
                            f"--requests={path}", "--iterations=3")
    assert code == 0
    assert report["requests"]["count"] == 4
    assert report["requests"]["notes"] == [
        "skipped 1 classify_log record(s): only Predict is compared"]
    assert _output(report, "y")["shape"] == [None, 1]  # batch sizes 1 to 4

    code, report = _compare(baseline, candidate, tmp_path / "perturbed", "--model_name=m",
                            "--baseline_version=1", "--candidate_version=2", f"--requests={path}",
                            "--num_requests=2",
                            *QUICK)
    assert code == 1
    assert report["requests"]["count"] == 2


def test_top_k_agreement_on_class_scores(
    baseline: ServerProcess, candidate: ServerProcess, tmp_path: Path
) -> None:
    common = ["--model_name=scores", "--batch_size=8", *QUICK]
    # Doubled scores keep every ranking but break the tolerance.
    code, report = _compare(baseline, candidate, tmp_path / "plain", *common,
                            "--candidate_model_name=scores_doubled")
    assert code == 1 and _output(report, "scores")["check"] == "tolerance"

    code, report = _compare(baseline, candidate, tmp_path / "top2", *common,
                            "--candidate_model_name=scores_doubled", "--top_k=2")
    assert code == 0
    scores = _output(report, "scores")
    assert scores["check"] == "top_k"
    assert scores["top_k_rows"] == scores["top_k_rows_agreeing"] == 16 * 8
    assert scores["mismatched_elements"] > 0  # still reported

    code, report = _compare(baseline, candidate, tmp_path / "reversed", *common,
                            "--candidate_model_name=scores_reversed", "--top_k=2")
    assert code == 1
    scores = _output(report, "scores")
    assert scores["top_k_rows_agreeing"] == 0
    first = scores["top_k_first_difference"]
    assert first["request"] == 0 and first["row"] == 0
    assert set(first["baseline"]).isdisjoint(first["candidate"])  # highest two vs lowest two
    assert "top-2 classes differ in 128 of 128 rows; first in request 0, row 0" in (
        tmp_path / "reversed" / "report.md").read_text()


@pytest.mark.parametrize(("model", "outputs"), [
    ("multi", {"sum": "tolerance", "twice": "exact"}),
    ("strings", {"output": "exact"}),
])
def test_generated_requests_cover_ints_and_strings(
    baseline: ServerProcess, candidate: ServerProcess, tmp_path: Path, model: str,
    outputs: dict[str, str],
) -> None:
    code, report = _compare(baseline, candidate, tmp_path, f"--model_name={model}",
                            "--num_requests=4", "--batch_size=3", *QUICK)
    assert code == 0, report
    assert {o["alias"]: o["check"] for o in report["outputs"]} == outputs
    assert all(o["elements"] > 0 for o in report["outputs"])


def _affine_saved_model(path: Path) -> None:
    """y = 2x + 1 as a TF2 SavedModel: the "affine" ONNX model's TensorFlow twin."""
    import tensorflow as tf

    class Affine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": 2.0 * x + 1.0}

    module = Affine()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def test_saved_model_in_process_as_baseline(candidate: ServerProcess, tmp_path: Path) -> None:
    saved = tmp_path / "saved" / "1"  # a TF Serving base path: its highest version is used
    _affine_saved_model(saved)

    code, report = _compare(None, candidate, tmp_path / "same", "--model_name=affine",
                            f"--baseline_saved_model={saved.parent}", "--batch_size=4",
                            "--iterations=5")
    assert code == 0
    assert report["sides"]["baseline"]["kind"] == "saved_model"
    assert report["sides"]["baseline"]["path"] == str(saved)
    assert report["latency"]["baseline"]["requests"] == 10
    assert "no RPC" in (tmp_path / "same" / "report.md").read_text()

    code, report = _compare(None, candidate, tmp_path / "off", "--model_name=affine_off",
                            f"--baseline_saved_model={saved}", *QUICK)
    assert code == 1
    assert _output(report, "y")["max_abs_error"] == pytest.approx(0.01, abs=1e-5)


def test_saved_model_baseline_logs_no_cuda_error(candidate: ServerProcess, tmp_path: Path) -> None:
    """Eager TensorFlow probes CUDA and logged `failed call to cuInit` as an error on every
    run on a machine without a GPU."""
    _affine_saved_model(tmp_path / "saved")
    result = subprocess.run(
        [sys.executable, "-m", "onnx_serving.migration.compare", "--model_name=affine",
         f"--baseline_saved_model={tmp_path / 'saved'}", f"--candidate={candidate.address}",
         f"--report_dir={tmp_path / 'report'}", *QUICK],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cuInit" not in result.stderr and "deprecated" not in result.stderr, result.stderr


# --- cannot run: exit 2 ---------------------------------------------------------------------


def test_unreachable_endpoint_or_missing_model_exits_2(
    baseline: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    argv = [f"--baseline={baseline.address}", f"--candidate={nowhere}", "--model_name=m",
            f"--report_dir={tmp_path}", "--timeout_seconds=5"]
    assert main(argv) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err
    argv[1:3] = [f"--candidate={baseline.address}", "--model_name=no_such_model"]
    assert main(argv) == 2
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main([*argv[:2], "--model_name=m", "--signature_name=nope", argv[3]]) == 2
    assert "no signature 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize("argv", [
    ["--candidate=h:1", "--model_name=m"],
    ["--candidate=h:1", "--baseline=h:2", "--baseline_saved_model=/x", "--model_name=m"],
    ["--candidate=h:1", "--baseline=h:2"],
    ["--candidate=h:1", "--baseline=h:2", "--model_name=m", "--baseline_version=1",
     "--baseline_label=a"],
    ["--candidate=h:1", "--baseline_saved_model=/x", "--model_name=m", "--baseline_version=1"],
    ["--candidate=h:1", "--baseline=h:2", "--model_name=m", "--concurrency=0"],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: onnx-serving compare" in capsys.readouterr().err


# --- the agreement rules, without servers -----------------------------------------------------


class FakeSide:
    def __init__(self, answers: list[dict[str, np.ndarray] | SideError]) -> None:
        self.answers = answers

    def predict(self, request: Request) -> dict[str, np.ndarray]:
        answer = self.answers[int(request.inputs["i"])]
        if isinstance(answer, SideError):
            raise answer
        return answer


def _agree(baseline: list[Any], candidate: list[Any], **tolerance: Any) -> Agreement:
    requests = [Request({"i": np.array(i)}) for i in range(len(baseline))]
    sides = {"baseline": FakeSide(baseline), "candidate": FakeSide(candidate)}
    return compare_outputs(sides, requests, Tolerance(**tolerance))  # type: ignore[arg-type]


def test_nan_agrees_only_with_nan_and_inf_only_with_itself() -> None:
    same = np.array([np.nan, np.inf, -np.inf, 1.0], np.float32)
    assert _agree([{"y": same}], [{"y": same.copy()}]).passed
    result = _agree([{"y": same}], [{"y": np.array([0.0, 1e30, -np.inf, 1.0], np.float32)}])
    y = result.outputs["y"]
    assert not result.passed and y.mismatched == 2
    assert y.to_json()["max_abs_error"] == "inf"  # JSON-safe


def test_tolerance_is_absolute_plus_relative() -> None:
    big = np.array([1000.0], np.float64)
    # 0.5 off at 1000: within 1e-4 + 1e-3 * 1000, so it agrees; at 1.0 it would not.
    assert _agree([{"y": big}], [{"y": big + 0.5}]).passed
    assert not _agree([{"y": np.array([1.0])}], [{"y": np.array([1.5])}]).passed
    rel = _agree([{"y": big}], [{"y": big + 0.5}]).outputs["y"].max_rel_error
    assert rel == pytest.approx(0.0005)


def test_strings_ints_dtypes_and_missing_outputs() -> None:
    text = np.array([b"a", b"b"], dtype=object)
    result = _agree(
        [{"s": text, "n": np.array([1, 2]), "f": np.zeros(2, np.float32), "gone": text}],
        [{"s": np.array([b"a", b"c"], dtype=object), "n": np.array([1, 2]),
          "f": np.zeros(2, np.float64)}],
    )
    s, n, f, gone = (result.outputs[k] for k in ("s", "n", "f", "gone"))
    assert not s.passed and s.mismatched == 1 and s.worst == {
        "request": 0, "index": [1], "baseline": "b", "candidate": "c"}
    assert n.passed and n.check == "exact"
    assert not f.passed and "dtype float32 in the baseline, float64 in the candidate" in f.problems
    assert not gone.passed and gone.problems == [
        "missing from the candidate's answers to 1 of 1 requests"]


def test_refusals_agree_only_when_both_sides_refuse_alike() -> None:
    ok = {"y": np.ones(1)}
    refused = SideError("INVALID_ARGUMENT", "bad input")
    result = _agree([ok, refused], [ok, SideError("INVALID_ARGUMENT", "worded otherwise")])
    assert result.passed and result.failures[0].agreed
    result = _agree([ok, refused], [ok, ok])
    assert not result.passed
    assert result.failures[0].to_json() == {
        "request": 1, "baseline": "INVALID_ARGUMENT: bad input", "candidate": None,
        "both_refused_alike": False}
    assert not _agree([refused], [refused]).passed  # nothing was compared at all


def test_low_precision_floats_and_top_k_outputs() -> None:
    import ml_dtypes

    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], ml_dtypes.bfloat16)
    shifted = (scores.astype(np.float32) + 0.05).astype(ml_dtypes.bfloat16)
    result = _agree([{"p": scores}], [{"p": shifted}], top_k=1, top_k_outputs=frozenset({"p"}))
    p = result.outputs["p"]
    assert result.passed and p.check == "top_k" and p.top_k_agreeing == 2
    assert p.max_abs_error == pytest.approx(0.05, abs=0.01)  # bfloat16 keeps ~3 digits

    result = _agree([{"p": scores}], [{"p": scores}], top_k=1,
                    top_k_outputs=frozenset({"p", "absent"}))
    assert not result.passed
    assert result.outputs["absent"].problems == [
        "named by --top_k_outputs, but neither side returned it"]
