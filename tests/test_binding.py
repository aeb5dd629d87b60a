"""IO binding with kept bindings and reused output buffers, against plain run(), on the CPU.
The CUDA check skips without a GPU."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_serving.server.errors import InvalidArgument
from onnx_serving.server.runtime.config import Provider
from tests.concurrency import run_concurrently
from tests.models import _model, add_constant, identity
from tests.test_runtime_config import CUDA_RUNS, session, write_model


def nonzero() -> object:
    """y = the indices of x's non-zero elements: its shape depends on x's values."""
    return _model(
        [helper.make_node("NonZero", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, "k"])],
    )


def gather() -> object:
    """y = [10, 20, 30][i]: an index out of range fails in ONNX Runtime, not before."""
    return _model(
        [helper.make_node("Gather", ["data", "i"], ["y"])],
        [helper.make_tensor_value_info("i", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([10, 20, 30], np.float32), "data")],
    )


def with_default() -> object:
    """y = x + b, where b is an input with a default (an initializer): feeding it is optional."""
    return _model(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([100], np.float32), "b")],
    )


def outputs(bound, feeds: dict, names: list[str]) -> list[np.ndarray]:
    """What a lease gives, copied out before the buffers go back."""
    with bound.lease(feeds, names, names) as values:
        return [np.array(values[n]) for n in names]


@pytest.mark.parametrize(
    ("elem_type", "value"),
    [
        (TensorProto.FLOAT, np.arange(12, dtype=np.float32).reshape(3, 4)),
        (TensorProto.INT64, np.arange(6, dtype=np.int64)),
        (TensorProto.BOOL, np.array([True, False])),
        (TensorProto.BFLOAT16, np.arange(4).astype(ml_dtypes.bfloat16)),
        (TensorProto.STRING, np.array(["a\x00b", "é"], dtype=object)),
    ],
)
def test_io_binding_gives_what_run_gives(tmp_path: Path, elem_type: int, value: np.ndarray) -> None:
    path = write_model(tmp_path / "1", identity(elem_type))
    plain, bound = session(path), session(path, io_binding=True)
    feed = {"input": value}
    expected = plain.run(feed, ["output"])[0]
    for _ in range(3):  # learns the shape, then writes into kept buffers
        [got] = outputs(bound, feed, ["output"])
        assert got.dtype == expected.dtype and got.tolist() == expected.tolist()


def test_output_buffers_are_reused_across_requests(tmp_path: Path) -> None:
    bound = session(write_model(tmp_path / "1", add_constant(1)), io_binding=True)
    addresses = []
    for i in range(4):
        with bound.lease({"x": np.full((2, 1), i, np.float32)}, ["y"], ["y"]) as out:
            y = out["y"]
            assert y.tolist() == [[i + 1.0]] * 2
            addresses.append(y.ctypes.data)
    # The first run learns the output's shape; every later one writes into the same buffer.
    assert len(set(addresses[1:])) == 1 and addresses[0] != addresses[1]
    for n in (1, 5, 2):  # another batch size gets buffers of its own shape
        [y] = outputs(bound, {"x": np.full((n, 1), n, np.float32)}, ["y"])
        assert y.tolist() == [[n + 1.0]] * n


def test_requests_in_flight_never_share_a_buffer(tmp_path: Path) -> None:
    bound = session(write_model(tmp_path / "1", add_constant(1)), io_binding=True)
    outputs(bound, {"x": np.zeros((1, 1), np.float32)}, ["y"])
    with bound.lease({"x": np.full((1, 1), 1, np.float32)}, ["y"], ["y"]) as out1, \
            bound.lease({"x": np.full((1, 1), 2, np.float32)}, ["y"], ["y"]) as out2:
        first, second = out1["y"], out2["y"]
        assert first.ctypes.data != second.ctypes.data
        assert (first.tolist(), second.tolist()) == ([[2.0]], [[3.0]])

    errors: list[str] = []

    def caller(k: int) -> None:
        for i in range(300):
            value = float(k * 1000 + i)
            with bound.lease({"x": np.full((3, 1), value, np.float32)}, ["y"], ["y"]) as out:
                if out["y"].tolist() != [[value + 1]] * 3:
                    errors.append(f"{k}/{i}: {out['y'].tolist()}")

    run_concurrently(caller, 8)
    assert errors == []


def test_an_output_shaped_by_values_falls_back_to_onnx_runtime_allocating(tmp_path: Path) -> None:
    bound = session(write_model(tmp_path / "1", nonzero()), io_binding=True)
    for x, expected in [([1, 0, 2], [[0, 2]]), ([1, 1, 1], [[0, 1, 2]]), ([0, 0, 3], [[2]]),
                        ([5, 0, 0], [[0]]), ([0, 0, 0], [[]])]:
        [y] = outputs(bound, {"x": np.array(x, np.float32)}, ["y"])
        assert y.tolist() == expected


def test_a_failed_run_answers_invalid_argument_and_keeps_the_buffers(tmp_path: Path) -> None:
    bound = session(write_model(tmp_path / "1", gather()), io_binding=True)
    for i in (0, 1):
        assert outputs(bound, {"i": np.array([i], np.int64)}, ["y"])[0].tolist() == [10 * (i + 1)]
    with pytest.raises(InvalidArgument, match=r"ONNX Runtime: .*out of"):
        outputs(bound, {"i": np.array([7], np.int64)}, ["y"])
    with bound.lease({"i": np.array([2], np.int64)}, ["y"], ["y"]) as out1, \
            bound.lease({"i": np.array([0], np.int64)}, ["y"], ["y"]) as out2:
        y, z = out1["y"], out2["y"]
        assert (y.tolist(), z.tolist()) == ([30.0], [10.0])


def test_an_input_left_out_takes_its_default_again(tmp_path: Path) -> None:
    """IO binding cannot bind an initializer fed a value of its own: that request goes
    through run(), and the next one, leaving it out, gets the default again."""
    bound = session(write_model(tmp_path / "1", with_default()), io_binding=True)
    x = np.array([1], np.float32)
    assert outputs(bound, {"x": x, "b": np.array([5], np.float32)}, ["y"])[0].tolist() == [6.0]
    assert outputs(bound, {"x": x}, ["y"])[0].tolist() == [101.0]


@pytest.mark.skipif(not CUDA_RUNS, reason="needs onnxruntime-gpu, a GPU and its libraries")
def test_cuda_with_io_binding(tmp_path: Path) -> None:  # pragma: no cover - GPU machines
    path = write_model(tmp_path / "1")
    providers = (Provider("CUDAExecutionProvider"), Provider("CPUExecutionProvider"))
    cuda = session(path, providers=providers, io_binding=True)
    assert cuda.providers[0] == "CUDAExecutionProvider"
    for n in (4, 4, 4, 2):
        assert outputs(cuda, {"x": np.ones((n, 1), np.float32)}, ["y"])[0].tolist() == [[2.0]] * n

