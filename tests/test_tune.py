"""``onnx-serving tune``: it runs real servers under load, keeps the default unless a
setting wins beyond the rounds' spread, and writes reports that parse and settings whose
effect the server shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_serving.client import Client, ServingError
from onnx_serving.server.runtime.threads import cores
from onnx_serving.tune import cli
from onnx_serving.tune.load import Result
from onnx_serving.tune.report import Choice, Row, choose, plot
from onnx_serving.tune.settings import Setting, grid, parse_batching
from tests.server_process import ServerProcess

BATCHING = "max_batch_size=8,batch_timeout_micros=0,num_batch_threads=1"
BATCHED = f"inst=1 nospin batch({BATCHING})"
LABELS = ["default", "inst=1 nospin", BATCHED]


def per_run_cost() -> onnx.ModelProto:
    """y = x + 0 * sum((W * sum(x)) @ W), x float32 [batch, 1]: a 1024² MatMul per run,
    whatever the batch, so batching 8 clients' requests into one run is a clear win (several
    times the throughput), far beyond any round-to-round noise."""
    size = 1024
    weights = np.random.default_rng(0).random((size, size), np.float32) / size
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Mul", ["w", "s"], ["ws"]),
        helper.make_node("MatMul", ["ws", "w"], ["p"]),
        helper.make_node("ReduceSum", ["p"], ["t"], keepdims=0),
        helper.make_node("Mul", ["t", "zero"], ["z"]),
        helper.make_node("Add", ["x", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "per_run_cost",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(weights, "w"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


Tuned = tuple[Path, Path, "subprocess.CompletedProcess[str]"]  # stdout, stderr as written


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Tuned:
    root = tmp_path_factory.mktemp("tune")
    base = root / "costly"
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.onnx").write_bytes(per_run_cost().SerializeToString())
    out = root / "out"
    done = subprocess.run(
        [sys.executable, "-m", "onnx_serving.server", "tune", f"--model_base_path={base}",
         "--clients=8", "--duration=2", "--warmup=0.2", "--rounds=2", "--instances=1",
         "--spinning=off", "--batching=none", f"--batching={BATCHING}",
         f"--output_dir={out}", "--apply"],
        capture_output=True, timeout=300,  # bytes: text mode would turn "\r" into "\n"
    )
    text = subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(),
                                       done.stderr.decode())
    assert text.returncode == 0, text.stderr[-3000:]
    return base, out, text


def test_tune_reports_each_settings_spread_and_picks_the_clear_win(tuned: Tuned) -> None:
    _, out, done = tuned
    for label in LABELS:
        assert f"| {label} |" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == LABELS
    for row in report["rows"]:
        assert len(row["rounds"]) == 2 and row["errors"] == 0
        spread = row["throughput"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        assert f"{spread['min']:.1f}-{spread['max']:.1f}" in done.stdout  # min-max column
    assert report["best"] == BATCHED, done.stdout
    assert "beats the default beyond the spread" in report["reason"]
    assert (out / "latency_vs_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and page.count("<tr") == len(LABELS) + 1
    assert (out / "report.md").read_text().count("\n| ") == len(LABELS) + 2  # head, rule


def test_progress_is_plain_lines_without_a_terminal(tuned: Tuned) -> None:
    """stderr is a pipe here, as a log file is: no bar redrawn with carriage returns."""
    _, _, done = tuned
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr
    steps = [line for line in done.stderr.splitlines() if "onnx_serving.tune] [" in line]
    assert len(steps) == len(LABELS) * 3  # each started, then measured in 2 rounds
    assert steps[-1].split("] [", 1)[1].startswith(f"{len(steps)}/{len(steps)}] round 2/2")
    assert all("req/s, p99" in line for line in steps if "] round " in line)


def test_applied_setting_takes_effect_in_the_server(tuned: Tuned, tmp_path: Path) -> None:
    """What --apply wrote is what a server started on the model's folder runs: one
    instance (the default runs min(2, cores)), and batches of at most 8 rows."""
    base, out, _ = tuned
    assert json.loads((base / "runtime.json").read_text()) == json.loads(
        (out / "runtime.json").read_text()) == Setting(instances=1, spinning=False).runtime_json()
    assert (base / "1" / "batching_params.pbtxt").read_text() == (
        out / "batching_params.pbtxt").read_text()
    server = ServerProcess([f"--model_base_path={base}", "--model_name=costly",
                            "--enable_batching", "--enable_per_model_batching_parameters"],
                           tmp_path / "server.log").start()
    try:
        with Client(server.address) as client:
            y = client.predict("costly", {"x": np.ones((8, 1), np.float32)})["y"]
            assert y.tolist() == [[1.0]] * 8
            with pytest.raises(ServingError, match="larger than maximum input batch size 8"):
                client.predict("costly", {"x": np.ones((9, 1), np.float32)})
        applied = Setting(instances=1, spinning=False).threads(cores()).describe()
        default = Setting().threads(cores()).describe()
        assert applied in server.logs()
        assert applied == default or default not in server.logs()
    finally:
        server.stop()


def _row(label: str, rounds: tuple[float, ...], p99_ms: float = 5.0, errors: int = 0) -> Row:
    """A row measured over ``rounds`` one-second rounds of that many requests each."""
    setting = Setting() if label == "default" else Setting(instances=len(label))
    results = [Result([p99_ms / 1000] * int(n), seconds=1.0, errors=errors) for n in rounds]
    return Row.of(setting, results, 2, label=label)


@pytest.mark.parametrize(("rows", "budget_ms", "best", "why"), [
    # A recorded run: 1.03x the default, inside the 91-108 req/s the rounds varied by.
    ([_row("default", (91, 108)), _row("inst", (97, 106))], None, "default", "within noise"),
    ([_row("default", (91, 108)), _row("inst", (100, 150))], None, "default", "within noise"),
    ([_row("default", (91, 108)), _row("inst", (109, 120))], None, "inst", "beyond the spread"),
    ([_row("default", (100, 110)), _row("inst", (80, 95))], None, "default", "the fastest"),
    # A default that fails, or misses the budget, is no setting to keep.
    ([_row("default", (91, 108), errors=1), _row("inst", (97, 106))], None, "inst",
     "did not fit"),
    ([_row("default", (91, 108), p99_ms=20), _row("inst", (97, 106))], 10.0, "inst",
     "did not fit"),
    # The fastest over budget: the next fastest is measured against the default.
    ([_row("default", (91, 108)), _row("inst", (300, 310), p99_ms=50),
      _row("intra", (200, 210))], 10.0, "intra", "beyond the spread"),
    ([_row("default", (91, 108), errors=1), _row("inst", (97, 106), p99_ms=20)], 10.0, None,
     "no setting met"),
])
def test_default_is_kept_unless_a_setting_wins_beyond_the_spread(
    rows: list[Row], budget_ms: float | None, best: str | None, why: str,
) -> None:
    choice = choose(rows, budget_ms)
    assert (choice.row.label if choice.row else None) == best
    assert why in choice.reason
    assert choice.keeps_default == (best == "default")


def test_apply_writes_nothing_when_the_default_is_kept(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "1").mkdir()
    rows = [_row("default", (91, 108)), Row.of(
        Setting(instances=1, batching=parse_batching(BATCHING)),
        [Result([0.005] * 97, 1.0), Result([0.005] * 106, 1.0)], 2)]
    choice = choose(rows, None)
    assert cli.conclude(choice, tmp_path) == 0
    assert "nothing applied: default kept within noise" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["1"]
    assert cli.conclude(Choice(None, None, "no setting met"), tmp_path) == 2


def test_plot_legend_is_outside_the_axes() -> None:
    rows = [_row("default", (91, 108)), _row("inst", (109, 120), p99_ms=7.0)]
    figure = plot(rows, choose(rows, None), "tune", budget_ms=6.0)
    figure.canvas.draw()
    [legend] = figure.legends
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    assert not legend.get_window_extent(renderer).overlaps(
        figure.axes[0].get_window_extent(renderer))
    assert legend.get_window_extent(renderer).y1 <= figure.axes[0].get_window_extent(renderer).y0
    assert not figure.axes[0].get_legend()


def test_one_round_is_refused() -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--model_base_path=m", "--rounds=1"])


def test_grid_starts_with_the_default_and_parses_batching() -> None:
    # On 2 cores, "nospin", "inst=2 nospin" and "inst=2 intra=2 nospin" run as the
    # default does, and "inst=1 nospin" as "intra=2 nospin" (one instance of both cores).
    settings = grid([None, 2, 1], [None, 2], [None], [False], [None],
                    [(), parse_batching("none")], 2)
    assert [s.label for s in settings] == ["default", "intra=2 nospin"]
    assert Setting(instances=2, intra_op_threads=2).busy_threads(2) == 3  # the default's
    assert not Setting().threads(2).oversubscribes(2)
    assert Setting(instances=3, intra_op_threads=2).threads(2).oversubscribes(2)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_batching("max_batch=8")


def test_requests_come_from_a_warmup_file_pointed_at_the_model(tmp_path: Path) -> None:
    from onnx_serving.client import make_tensor_proto
    from onnx_serving.codec.tfrecord import write_records
    from onnx_serving.protos.tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    from onnx_serving.tune.load import from_file

    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.name = "elsewhere"
    log.predict_log.request.model_spec.version.value = 3
    log.predict_log.request.inputs["x"].CopyFrom(make_tensor_proto(np.ones((2, 1), np.float32)))
    path = tmp_path / "tf_serving_warmup_requests"
    write_records(path, [log.SerializeToString()])
    [request] = [predict_pb2.PredictRequest.FromString(r) for r in from_file(path, "plus_one")]
    assert request.model_spec.name == "plus_one" and not request.model_spec.HasField("version")
    assert list(request.inputs) == ["x"]
