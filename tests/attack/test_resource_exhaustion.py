"""Attacks on the server's memory, time and disk: each gets a clear status, and the
server goes on answering.

A few bytes that declare a huge tensor, a model asked to allocate terabytes,
requests whose callers stopped waiting, and a request log on a disk that fills:
all on the real server, over TF Serving's own client.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from onnx_serving.codec.tensors import MAX_FILL_BYTES, make_ndarray
from onnx_serving.protos.tensorflow.core.framework import types_pb2
from tests.models import EXAMPLES
from tests.server_process import ServerProcess, free_port
from tests.test_classify import example, regress_request
from tests.test_observability import sample
from tests.test_request_log import files, records, small_filesystem, wait_for
from tests.test_rest import _slow_model as slow_model

TIMEOUT = 30
EXPIRED = 6  # requests whose deadline passes while the model is busy


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    tmp = tmp_path_factory.mktemp("attacked")
    shutil.copytree(EXAMPLES / "models" / "half_plus_two", tmp / "half_plus_two")
    (tmp / "slow" / "1").mkdir(parents=True)
    (tmp / "slow" / "1" / "model.onnx").write_bytes(slow_model().SerializeToString())
    # One run at a time, one thread: requests behind a run wait for it.
    (tmp / "slow" / "runtime.json").write_text(json.dumps(
        {"instances": 1, "session": {"intra_op_threads": 1}}))
    config = tmp / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{tmp / name}" model_platform: "onnx" }}\n'
        for name in ("half_plus_two", "slow")) + "}\n")
    monitoring = tmp / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    rest_port = free_port()
    server = ServerProcess(
        [f"--model_config_file={config}", f"--rest_api_port={rest_port}",
         f"--monitoring_config_file={monitoring}"], tmp / "server.log",
    ).start()
    yield server, rest_port
    server.stop()


def call(server: ServerProcess, request: predict_pb2.PredictRequest,
         timeout: float = TIMEOUT) -> predict_pb2.PredictResponse:
    with server.channel() as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=timeout)


def refused(server: ServerProcess, request: predict_pb2.PredictRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(server, request)
    return caught.value


def x_request(dims: list[int], dtype: int = types_pb2.DT_FLOAT, model: str = "half_plus_two",
              **fields: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs["n" if model == "slow" else "x"]
    tensor.dtype = dtype  # type: ignore[assignment]
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    for name, value in fields.items():
        if isinstance(value, bytes):
            setattr(tensor, name, value)
        else:
            getattr(tensor, name).extend(value)  # type: ignore[call-overload]
    return request


def still_answers(server: ServerProcess) -> None:
    response = call(server, x_request([1], float_val=[2.0]))
    assert list(response.outputs["y"].float_val) == [3.0]


def test_a_broadcast_bomb_is_refused_before_any_allocation(attacked) -> None:
    server, _ = attacked
    bomb = x_request([2**27, 1], float_val=[1.0])
    assert len(bomb.SerializeToString()) < 64
    error = refused(server, bomb)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "tensor parsing error: x" in error.details()
    assert "over the limit" in error.details()
    still_answers(server)
    # TF's fill rule still holds within the bound: one value fills a thousand.
    filled = call(server, x_request([1000, 1], float_val=[2.0]))
    assert make_ndarray(filled.outputs["y"]).tolist() == [[3.0]] * 1000


@pytest.mark.parametrize(("dims", "dtype", "fields", "code"), [
    ([2**30, 2**30], types_pb2.DT_FLOAT, {"float_val": [1.0]}, "RESOURCE_EXHAUSTED"),
    ([2**31, 2**31], types_pb2.DT_DOUBLE, {}, "RESOURCE_EXHAUSTED"),
    ([2**62, 2**62], types_pb2.DT_DOUBLE, {}, "INVALID_ARGUMENT"),  # over int64: malformed
    ([0, 2**31, 2**31], types_pb2.DT_FLOAT, {}, "INVALID_ARGUMENT"),  # empty, not indexable
    ([2**27], types_pb2.DT_STRING, {"string_val": [b"a"]}, "RESOURCE_EXHAUSTED"),
    ([2**27, 1], types_pb2.DT_FLOAT, {"tensor_content": b"\0\0\0\0"}, "INVALID_ARGUMENT"),
    ([1] * 65, types_pb2.DT_FLOAT, {"float_val": [1.0]}, "INVALID_ARGUMENT"),
    ([-1, 1], types_pb2.DT_FLOAT, {"float_val": [1.0]}, "INVALID_ARGUMENT"),
])
def test_huge_declared_shapes(attacked, dims, dtype, fields, code) -> None:
    server, _ = attacked
    error = refused(server, x_request(dims, dtype, **fields))
    assert error.code() == getattr(grpc.StatusCode, code), error.details()
    assert error.details().startswith("tensor parsing error: x: ")
    still_answers(server)


CONTEXT = example(**{f"f{i}": 1.0 for i in range(2000)})  # 37 KB, shared by every example


def peak_growth_mib(pid: int, work: Callable[[], None]) -> float:
    """How far the process's resident memory rose above where it was, while ``work`` ran."""
    (Path("/proc") / str(pid) / "clear_refs").write_text("5")  # resets the peak (VmHWM)
    before = _status_kib(pid, "VmRSS")
    work()
    return (_status_kib(pid, "VmHWM") - before) / 1024


def _status_kib(pid: int, field: str) -> int:
    text = (Path("/proc") / str(pid) / "status").read_text()
    return int(text.split(f"{field}:")[1].split()[0])


def test_examples_sharing_a_large_context(attacked) -> None:
    """Copies of a context, one merged into each example as TF Serving merges them, are
    bytes the request does not carry: bounded as a tensor's filled values are. Under the
    bound, only the features the signature reads outlive each example's parse."""
    server, rest_port = attacked
    over = MAX_FILL_BYTES // len(CONTEXT.SerializeToString()) + 1
    with server.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Regress(regress_request("regress_x_to_y", *[example(x=2.0)] * over,
                                         model="half_plus_two", context=CONTEXT),
                         timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over the limit" in caught.value.details()
        answer = requests.post(
            f"http://127.0.0.1:{rest_port}/v1/models/half_plus_two:regress",
            json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}] * over,
                  "context": {f"f{i}": 1.0 for i in range(2000)}}, timeout=TIMEOUT)
        assert answer.status_code == 429 and "over the limit" in answer.json()["error"]

        under = regress_request("regress_x_to_y", *[example(x=2.0)] * (over - 1),
                                model="half_plus_two", context=CONTEXT)
        answered: list[float] = []

        def regress() -> None:
            response = stub.Regress(under, timeout=TIMEOUT)
            answered.extend(r.value for r in response.result.regressions)

        # Every merged example parsed at once peaked about 780 MiB higher.
        assert peak_growth_mib(server.process.pid, regress) < 300
    assert answered == [3.0] * (over - 1)
    still_answers(server)


def test_a_model_that_cannot_allocate_answers_resource_exhausted(attacked) -> None:
    server, rest_port = attacked
    terabytes = x_request([], types_pb2.DT_INT64, model="slow", int64_val=[2**20])
    error = refused(server, terabytes)  # ConstantOfShape [2^20, 2^20]: 4 TiB of floats
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Failed to allocate memory" in error.details()
    answer = requests.post(f"http://127.0.0.1:{rest_port}/v1/models/slow:predict",
                           json={"inputs": 2**20}, timeout=TIMEOUT)
    assert answer.status_code == 429 and "Failed to allocate memory" in answer.json()["error"]
    still_answers(server)


def runs(rest_port: int) -> float:
    """The slow model's runs that completed (TF's runtime_latency counts them)."""
    text = requests.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics",
                        timeout=TIMEOUT).text
    return sample(text, ":tensorflow:serving:runtime_latency_count", model_name="slow")


def test_requests_past_their_deadline_do_not_run(attacked) -> None:
    server, rest_port = attacked
    before = runs(rest_port)
    busy = x_request([], types_pb2.DT_INT64, model="slow", int64_val=[3500])  # a second or so

    def expire(_: int) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as caught:
            call(server, busy, timeout=0.3)
        return caught.value.code()

    with ThreadPoolExecutor(EXPIRED) as pool:
        codes = list(pool.map(expire, range(EXPIRED)))
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * EXPIRED
    # The next caller, with time to wait, is answered; of all these runs only its own
    # completed: the others were skipped in the queue or stopped when their caller left.
    assert call(server, x_request([], types_pb2.DT_INT64, model="slow", int64_val=[10]))\
        .outputs["total"].float_val == [1000.0]
    assert runs(rest_port) == before + 1
    text = requests.get(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics",
                        timeout=TIMEOUT).text
    gone = sum(sample(text, ":tensorflow:serving:request_count", model_name="slow", status=s)
               for s in ("DEADLINE_EXCEEDED", "CANCELLED"))
    assert gone == EXPIRED


def test_a_full_disk_under_the_request_log(tmp_path: Path) -> None:
    """The request log's disk fills: requests go on, drops are counted with one ERROR
    line, writing resumes when space returns, and SIGTERM still stops the server."""
    with small_filesystem(tmp_path / "logs") as logs:
        prefix = logs / "logged"
        config = tmp_path / "models.config"
        config.write_text(f"""model_config_list {{ config {{
          name: "logged" base_path: "{EXAMPLES / 'models' / 'half_plus_two'}"
          logging_config {{ log_collector_config {{ filename_prefix: "{prefix}" }}
                            sampling_config {{ sampling_rate: 1.0 }} }} }} }}""")
        monitoring = tmp_path / "monitoring.config"
        monitoring.write_text("prometheus_config { enable: true }")
        rest_port = free_port()
        server = ServerProcess(
            [f"--model_config_file={config}", f"--rest_api_port={rest_port}",
             f"--monitoring_config_file={monitoring}"], tmp_path / "server.log",
        ).start()
        try:
            def logged(outcome: str) -> float:
                text = requests.get(
                    f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics",
                    timeout=TIMEOUT).text
                return sample(text, ":onnx_serving:request_log_records", outcome=outcome)

            big = x_request([25_000, 1], model="logged", float_val=[1.0] * 25_000)
            for _ in range(30):  # 200 KB a record: 6 MB for a 1 MiB disk
                assert len(call(server, big).outputs["y"].float_val) == 25_000
            wait_for(lambda: logged("written") + logged("dropped") == 30)
            assert logged("dropped") > 0
            errors = [line for line in server.logs().splitlines() if " E " in line]
            assert len(errors) == 1 and "No space left on device" in errors[0], errors

            for path in files(prefix):  # space returns
                path.unlink()
            small = x_request([1], model="logged", float_val=[1.0])

            def written_again() -> bool:
                call(server, small)
                return bool(files(prefix)) and len(records(prefix)) > 0

            wait_for(written_again)
            assert "writing again" in server.logs()
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=TIMEOUT) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not stop at SIGTERM")
        finally:
            server.stop()
