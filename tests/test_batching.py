"""Server-side batching: parameters files, batch forming, padding, splitting, errors, close.

Every test drives a Batcher with a fake ``run``; no model or server is needed.
Tests that must see requests pile up hold the only batch thread inside ``run``
(``Gate``) and queue requests behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from onnx_serving.protos.tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import (
    BatchingParameters,
)
from onnx_serving.server.batching import (
    Batcher,
    BatchingOptions,
    BatchScheduler,
    read_batching_parameters,
)
from onnx_serving.server.batching.options import _cpu_count
from onnx_serving.server.errors import (
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from onnx_serving.server.runtime.deadline import Deadline
from tests.concurrency import run_concurrently

Arrays = dict[str, np.ndarray]


def double(inputs: Mapping[str, np.ndarray]) -> Arrays:
    return {"y": inputs["x"] * 2}


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Gate:
    """A fake run that records each batch and holds the first one until ``open()``."""

    def __init__(self, run: Callable[[Arrays], Arrays] = double) -> None:
        self._run = run
        self.batches: list[Arrays] = []
        self.entered = threading.Event()
        self._released = threading.Event()

    def __call__(self, inputs: Arrays) -> Arrays:
        self.batches.append({name: array.copy() for name, array in inputs.items()})
        if len(self.batches) == 1:
            self.entered.set()
            assert self._released.wait(10)
        return self._run(inputs)

    def open(self) -> None:
        self._released.set()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as executor:
        yield executor


def rows(*values: float, width: int = 1, dtype: type = np.float32) -> np.ndarray:
    return np.repeat(np.array(values, dtype=dtype)[:, None], width, axis=1)


def hold(batcher: Batcher, gate: Gate, pool: ThreadPoolExecutor) -> Future[Arrays]:
    """Occupies the batch thread with a one-row request; returns its future."""
    blocker = pool.submit(batcher.submit, {"x": rows(-1)})
    assert gate.entered.wait(5)
    return blocker


def queue_behind(
    batcher: Batcher, pool: ThreadPoolExecutor, requests: list[Arrays]
) -> list[Future[Arrays]]:
    """Submits ``requests`` one by one, each queued before the next is sent."""
    futures = []
    for request in requests:
        waiting = batcher.pending
        futures.append(pool.submit(batcher.submit, request))
        wait_for(lambda waiting=waiting: batcher.pending > waiting)
    return futures


# Options -------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batching_parameters.txt"
    path.write_text(text)
    return path


def test_defaults_are_tf_servings(tmp_path: Path) -> None:
    options = read_batching_parameters(write(tmp_path, ""))
    assert options == BatchingOptions()
    assert options.max_batch_size == 1000
    assert options.batch_timeout_micros == 0
    assert options.max_enqueued_batches == 10
    assert options.num_batch_threads == _cpu_count()
    assert options.thread_pool_name == "batch_threads"
    assert options.allowed_batch_sizes == ()
    assert not options.pad_variable_length_inputs
    assert not options.enable_large_batch_splitting
    assert options.execution_batch_size == 1000
    assert options.padded_size(7) == 7


def test_tf_servings_example_file(tmp_path: Path) -> None:
    """servables/tensorflow/testdata/batching_config.txt, as TF Serving ships it."""
    path = write(
        tmp_path,
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\n"
        "num_batch_threads { value: 8 }\n",
    )
    options = read_batching_parameters(path)
    assert (options.max_batch_size, options.batch_timeout_micros) == (128, 0)
    assert (options.max_enqueued_batches, options.num_batch_threads) == (1000000, 8)


def test_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        max_batch_size { value: 64 }
        batch_timeout_micros { value: 2000 }
        max_enqueued_batches { value: 3 }
        num_batch_threads { value: 2 }
        thread_pool_name { value: "model_server_batch_threads" }
        allowed_batch_sizes: [8, 16, 64]
        pad_variable_length_inputs: true
        enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 16 }
        """,
    )
    options = read_batching_parameters(path)
    assert options == BatchingOptions(
        max_batch_size=64,
        batch_timeout_micros=2000,
        max_enqueued_batches=3,
        num_batch_threads=2,
        thread_pool_name="model_server_batch_threads",
        allowed_batch_sizes=(8, 16, 64),
        pad_variable_length_inputs=True,
        enable_large_batch_splitting=True,
        max_execution_batch_size=16,
    )
    assert options.execution_batch_size == 16
    assert [options.padded_size(n) for n in (1, 8, 9, 17, 64)] == [8, 8, 16, 64, 64]


def test_max_execution_batch_size_only_counts_when_splitting() -> None:
    message = BatchingParameters()
    message.max_batch_size.value = 32
    message.max_execution_batch_size.value = 8
    assert BatchingOptions.from_proto(message).execution_batch_size == 32


def test_zero_max_enqueued_batches_means_one_as_in_tf_serving() -> None:
    message = BatchingParameters()
    message.max_enqueued_batches.value = 0
    assert BatchingOptions.from_proto(message).max_enqueued_batches == 1


def test_last_allowed_batch_size_must_match_max_batch_size(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as error:
        BatchingOptions(max_batch_size=128, allowed_batch_sizes=(16, 64))
    assert error.value.message == (
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 64; "
        "expected 128"
    )
    path = write(tmp_path, "allowed_batch_sizes: [16, 64]\n")  # max_batch_size defaults to 1000
    with pytest.raises(ConfigError, match=f"{path}.*last entry was 64; expected 1000"):
        read_batching_parameters(path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"allowed_batch_sizes": (8, 8, 16), "max_batch_size": 16}, "monotonically increasing"),
        ({"max_batch_size": 0}, "max_batch_size must be positive; was 0"),
        ({"num_batch_threads": 0}, "num_batch_threads must be positive; was 0"),
        ({"batch_timeout_micros": -1}, "batch_timeout_micros must be non-negative; was -1"),
        (
            {"enable_large_batch_splitting": True, "max_execution_batch_size": 64,
             "max_batch_size": 32},
            "max_batch_size must be greater than or equal to max_execution_batch_size",
        ),
    ],
)
def test_bad_values(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        BatchingOptions(**fields)  # type: ignore[arg-type]


def test_parse_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "max_batch_size { value: 8 }\n\nmax_batch_sise { value: 9 }\n")
    with pytest.raises(ConfigError) as error:
        read_batching_parameters(path)
    assert f"{path}:3:" in error.value.message
    assert "tensorflow.serving.BatchingParameters" in error.value.message
    assert "max_batch_sise" in error.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read batching parameters file"):
        read_batching_parameters(tmp_path / "absent.txt")


# Forming batches ---------------------------------------------------------------------


def test_concurrent_callers_each_get_their_own_rows() -> None:
    sizes: list[int] = []
    lock = threading.Lock()

    def run(inputs: Arrays) -> Arrays:
        with lock:
            sizes.append(len(inputs["x"]))
        time.sleep(0.002)  # a model run long enough for requests to pile up
        return {"y": inputs["x"] * 2, "id": inputs["id"].copy()}

    options = BatchingOptions(max_batch_size=8, batch_timeout_micros=1000, num_batch_threads=2)
    threads, per_thread = 24, 30
    wrong: list[tuple[int, int]] = []
    with Batcher(run, options) as batcher:

        def client(t: int) -> None:
            for i in range(per_thread):
                n = 1 + (t + i) % 3
                ids = np.arange(n, dtype=np.int64) + 1000 * (t * per_thread + i)
                x = ids.astype(np.float64)[:, None] * [1.0, -1.0]
                out = batcher.submit({"x": x, "id": ids})
                if not (np.array_equal(out["y"], x * 2) and np.array_equal(out["id"], ids)):
                    wrong.append((t, i))

        run_concurrently(client, threads)
        stats = batcher.stats

    assert not wrong
    total = sum(1 + (t + i) % 3 for t in range(threads) for i in range(per_thread))
    assert sum(sizes) == stats.rows == total
    assert stats.tasks == threads * per_thread and stats.batches == len(sizes)
    assert max(sizes) == 8 and all(size <= 8 for size in sizes)
    assert stats.mean_batch_size > 4


def test_timeout_runs_a_part_full_batch() -> None:
    sizes: list[int] = []

    def run(inputs: Arrays) -> Arrays:
        sizes.append(len(inputs["x"]))
        return double(inputs)

    options = BatchingOptions(max_batch_size=100, batch_timeout_micros=30_000, num_batch_threads=1)
    with Batcher(run, options) as batcher:
        start = time.monotonic()
        out = batcher.submit({"x": rows(1, 2)})
        waited = time.monotonic() - start
    assert np.array_equal(out["y"], rows(2, 4))
    assert sizes == [2]
    assert 0.025 < waited < 2


def test_zero_timeout_runs_at_once_when_a_thread_is_free() -> None:
    options = BatchingOptions(max_batch_size=100, batch_timeout_micros=0, num_batch_threads=1)
    with Batcher(double, options) as batcher:
        start = time.monotonic()
        batcher.submit({"x": rows(1)})
        assert time.monotonic() - start < 0.5


def test_requests_of_different_shapes_or_dtypes_are_never_merged(
    pool: ThreadPoolExecutor,
) -> None:
    gate = Gate()
    options = BatchingOptions(max_batch_size=8, num_batch_threads=1)
    requests = [
        {"x": rows(1, 2, width=3)},
        {"x": rows(3, width=4)},
        {"x": rows(4, width=3)},
        {"x": rows(5, width=3, dtype=np.float64)},
        {"x": rows(6, width=4)},
    ]
    with Batcher(gate, options) as batcher:
        blocker = hold(batcher, gate, pool)
        futures = queue_behind(batcher, pool, requests)
        gate.open()
        results = [future.result(5) for future in futures]
        blocker.result(5)
    for request, result in zip(requests, results, strict=True):
        assert np.array_equal(result["y"], request["x"] * 2)
        assert result["y"].dtype == request["x"].dtype
    merged = sorted((b["x"].shape, b["x"].dtype.name) for b in gate.batches[1:])
    assert merged == [((1, 3), "float64"), ((2, 4), "float32"), ((3, 3), "float32")]


def test_pad_variable_length_inputs_merges_and_returns_each_callers_rows(
    pool: ThreadPoolExecutor,
) -> None:
    def run(inputs: Arrays) -> Arrays:
        # "first" ignores the padded positions, "y" shows them.
        return {"y": inputs["x"] * 2, "first": inputs["x"][:, 0] * 10}

    gate = Gate(run)
    options = BatchingOptions(
        max_batch_size=8, num_batch_threads=1, pad_variable_length_inputs=True
    )
    short = {"x": np.array([[1, 2], [3, 4]], dtype=np.int32)}
    long = {"x": np.array([[5, 6, 7, 8]], dtype=np.int32)}
    other_dtype = {"x": np.array([[9, 9, 9]], dtype=np.int64)}
    with Batcher(gate, options) as batcher:
        blocker = hold(batcher, gate, pool)
        futures = queue_behind(batcher, pool, [short, long, other_dtype])
        gate.open()
        got_short, got_long, got_other = (future.result(5) for future in futures)
        blocker.result(5)
    padded = sorted(b["x"].shape for b in gate.batches[1:])
    assert padded == [(1, 3), (3, 4)]
    merged = next(b["x"] for b in gate.batches[1:] if b["x"].shape == (3, 4))
    # Padding repeats each request's own first element, as TF Serving pads.
    assert merged.tolist() == [[1, 2, 1, 1], [3, 4, 1, 1], [5, 6, 7, 8]]
    assert got_short["first"].tolist() == [10, 30]
    assert got_short["y"].tolist() == [[2, 4, 2, 2], [6, 8, 2, 2]]
    assert got_long["y"].tolist() == [[10, 12, 14, 16]]
    assert got_other["y"].tolist() == [[18, 18, 18]]


def test_allowed_batch_sizes_pad_the_batch_and_drop_the_padding(
    pool: ThreadPoolExecutor,
) -> None:
    gate = Gate()
    seen: list[tuple[int, int, list[int]]] = []
    options = BatchingOptions(
        max_batch_size=8, allowed_batch_sizes=(2, 4, 8), num_batch_threads=1
    )

    def observe(batch_size: int, padded_size: int, tasks: list[tuple[int, float]]) -> None:
        seen.append((batch_size, padded_size, [task_rows for task_rows, _ in tasks]))
        assert all(0 <= seconds < 5 for _, seconds in tasks)

    with Batcher(gate, options, observe=observe) as batcher:
        blocker = hold(batcher, gate, pool)
        futures = queue_behind(batcher, pool, [{"x": rows(1)}, {"x": rows(2)}, {"x": rows(3)}])
        gate.open()
        results = [future.result(5)["y"] for future in futures]
        blocker.result(5)
        wait_for(lambda: len(seen) == 2)
        stats = batcher.stats
    assert [r.tolist() for r in results] == [[[2.0]], [[4.0]], [[6.0]]]
    assert [b["x"].ravel().tolist() for b in gate.batches] == [[-1, -1], [1, 2, 3, 3]]
    assert seen == [(1, 2, [1]), (3, 4, [1, 1, 1])]
    assert (stats.rows, stats.padded_rows, stats.batches) == (4, 2, 2)


def test_oversize_request_is_refused_with_tf_servings_message() -> None:
    with (
        Batcher(double, BatchingOptions(max_batch_size=4, num_batch_threads=1)) as batcher,
        pytest.raises(InvalidArgument) as error,
    ):
        batcher.submit({"x": rows(*range(5))})
    assert error.value.message == "Task size 5 is larger than maximum input batch size 4"


def test_large_batch_splitting_runs_pieces_and_reassembles_them() -> None:
    sizes: list[int] = []

    def run(inputs: Arrays) -> Arrays:
        sizes.append(len(inputs["x"]))
        return double(inputs)

    options = BatchingOptions(
        max_batch_size=10,
        enable_large_batch_splitting=True,
        max_execution_batch_size=4,
        num_batch_threads=1,
    )
    with Batcher(run, options) as batcher:
        x = rows(*range(10), width=2)
        out = batcher.submit({"x": x})
        assert np.array_equal(out["y"], x * 2)
        assert sorted(sizes) == [2, 4, 4]
        # max_batch_size still bounds a request, as in TF Serving.
        with pytest.raises(InvalidArgument, match="Task size 11 is larger"):
            batcher.submit({"x": rows(*range(11))})


def test_split_request_fills_the_open_batch_first(pool: ThreadPoolExecutor) -> None:
    gate = Gate()
    options = BatchingOptions(
        max_batch_size=8,
        enable_large_batch_splitting=True,
        max_execution_batch_size=4,
        num_batch_threads=1,
    )
    with Batcher(gate, options) as batcher:
        blocker = hold(batcher, gate, pool)
        small, large = queue_behind(
            batcher, pool, [{"x": rows(1)}, {"x": rows(*range(10, 17))}]
        )
        gate.open()
        assert small.result(5)["y"].ravel().tolist() == [2]
        assert large.result(5)["y"].ravel().tolist() == [2 * v for v in range(10, 17)]
        blocker.result(5)
    assert [b["x"].ravel().tolist() for b in gate.batches[1:]] == [
        [1, 10, 11, 12],
        [13, 14, 15, 16],
    ]


def test_full_queue_answers_unavailable(pool: ThreadPoolExecutor) -> None:
    gate = Gate()
    options = BatchingOptions(max_batch_size=2, max_enqueued_batches=2, num_batch_threads=1)
    with Batcher(gate, options) as batcher:
        blocker = hold(batcher, gate, pool)
        queued = queue_behind(batcher, pool, [{"x": rows(1, 2)}, {"x": rows(3, 4)}])
        with pytest.raises(Unavailable) as error:
            batcher.submit({"x": rows(5)})
        assert error.value.message == (
            "The batch scheduling queue to which this task was submitted is full; "
            "currently 2 batches enqueued and max_enqueued_batches is 2"
        )
        gate.open()
        assert [f.result(5)["y"].ravel().tolist() for f in queued] == [[2, 4], [6, 8]]
        blocker.result(5)


def test_failing_run_fails_only_that_batchs_callers(pool: ThreadPoolExecutor) -> None:
    def run(inputs: Arrays) -> Arrays:
        if (inputs["x"] == 666).any():
            raise RuntimeError("poisoned batch")
        return double(inputs)

    gate = Gate(run)
    options = BatchingOptions(max_batch_size=3, num_batch_threads=1)
    with Batcher(gate, options) as batcher:
        blocker = hold(batcher, gate, pool)
        first = queue_behind(batcher, pool, [{"x": rows(1)}, {"x": rows(666)}, {"x": rows(3)}])
        second = queue_behind(batcher, pool, [{"x": rows(4)}, {"x": rows(5)}])
        gate.open()
        errors = [f.exception(5) for f in first]
        assert all(isinstance(e, RuntimeError) and str(e) == "poisoned batch" for e in errors)
        assert [f.result(5)["y"].item() for f in second] == [8, 10]
        blocker.result(5)
        assert batcher.stats.failed_batches == 1


def test_outputs_without_the_batch_dimension_fail_the_batch() -> None:
    def run(inputs: Arrays) -> Arrays:
        return {"total": np.asarray(inputs["x"].sum())}

    with (
        Batcher(run, BatchingOptions(num_batch_threads=1)) as batcher,
        pytest.raises(FailedPrecondition, match="'total' has 0 dimensions"),
    ):
        batcher.submit({"x": rows(1, 2)})


def test_scalars_run_alone_in_the_callers_thread() -> None:
    callers: list[str] = []

    def run(inputs: Arrays) -> Arrays:
        callers.append(threading.current_thread().name)
        return {"y": inputs["x"] * 2}

    with Batcher(run, BatchingOptions(num_batch_threads=1)) as batcher:
        out = batcher.submit({"x": np.array(3.0)})
        assert out["y"] == 6.0
        assert callers == [threading.current_thread().name]
        assert batcher.stats.unbatched == 1 and batcher.stats.batches == 0


def test_close_fails_waiting_requests_and_stops_threads(pool: ThreadPoolExecutor) -> None:
    gate = Gate()
    batcher = Batcher(gate, BatchingOptions(max_batch_size=1, num_batch_threads=1))
    blocker = hold(batcher, gate, pool)
    waiting = queue_behind(batcher, pool, [{"x": rows(1)}, {"x": rows(2)}])
    closing = pool.submit(batcher.close)
    for future in waiting:
        assert isinstance(future.exception(5), Unavailable)
    assert not closing.done()  # it waits for the running batch
    gate.open()
    assert blocker.result(5)["y"].item() == -2
    closing.result(5)
    assert not [t for t in threading.enumerate() if t.name.startswith("batch_threads_")]
    with pytest.raises(Unavailable):
        batcher.submit({"x": rows(3)})
    batcher.close()  # idempotent


def test_batchers_share_a_scheduler() -> None:
    scheduler = BatchScheduler(2, "shared")
    options = BatchingOptions(max_batch_size=4)
    plus = Batcher(lambda inputs: {"y": inputs["x"] + 1}, options, scheduler=scheduler)
    times = Batcher(lambda inputs: {"y": inputs["x"] * 3}, options, scheduler=scheduler)
    try:
        assert plus.submit({"x": rows(1)})["y"].item() == 2
        assert times.submit({"x": rows(2)})["y"].item() == 6
        plus.close()  # the other keeps running on the shared threads
        assert times.submit({"x": rows(3)})["y"].item() == 9
        with pytest.raises(Unavailable):
            plus.submit({"x": rows(1)})
    finally:
        times.close()
        scheduler.close()
    with pytest.raises(Unavailable):
        times.submit({"x": rows(1)})


def test_a_failing_observer_does_not_stop_batching() -> None:
    def observe(batch_size: int, padded_size: int, tasks: list[tuple[int, float]]) -> None:
        raise RuntimeError("metrics broke")

    with Batcher(double, BatchingOptions(num_batch_threads=1), observe=observe) as batcher:
        assert batcher.submit({"x": rows(1)})["y"].item() == 2
        assert batcher.submit({"x": rows(2)})["y"].item() == 4


def test_requests_whose_callers_left_are_left_out_of_their_batch(
    pool: ThreadPoolExecutor,
) -> None:
    gate = Gate()
    options = BatchingOptions(max_batch_size=8, num_batch_threads=1)
    left, expired, waiting = Deadline(), Deadline(0.0), Deadline(60.0)
    with Batcher(gate, options) as batcher:
        blocker = hold(batcher, gate, pool)
        futures = []
        for value, awaited in ((1, left), (2, expired), (3, waiting)):
            queued = batcher.pending
            futures.append(pool.submit(batcher.submit, {"x": rows(value)}, awaited))
            wait_for(lambda queued=queued: batcher.pending > queued)
        left.leave()  # while queued: the run has not started
        gate.open()
        blocker.result(5)
        with pytest.raises(Cancelled):
            futures[0].result(5)
        with pytest.raises(DeadlineExceeded):
            futures[1].result(5)
        assert futures[2].result(5)["y"].tolist() == [[6.0]]
    assert [b["x"].tolist() for b in gate.batches[1:]] == [[[3.0]]]  # only the awaited row
