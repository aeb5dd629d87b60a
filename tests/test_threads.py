"""Threads chosen from the cores: instances, intra-op threads, spinning, global pools."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from onnx_serving.client import Client
from onnx_serving.server.errors import ModelLoadError
from onnx_serving.server.runtime import config as runtime_config
from onnx_serving.server.runtime.config import RuntimeConfig
from onnx_serving.server.runtime.graph import read_graph
from onnx_serving.server.runtime.session import OnnxSession
from onnx_serving.server.runtime.threads import SPINNING, Threads, choose
from tests.models import add_constant
from tests.server_process import ServerProcess


@pytest.mark.parametrize(("config", "cpus", "expected"), [
    # Two instances sharing a pool of every core: a lone request gets the machine.
    (RuntimeConfig(), 2, (2, 2)),
    (RuntimeConfig(), 8, (2, 8)),
    (RuntimeConfig(), 1, (1, 1)),
    (RuntimeConfig(intra_op_threads=2), 2, (1, 2)),  # a flag's threads: instances follow
    (RuntimeConfig(instances=4), 8, (4, 6)),  # all running: one thread beyond the cores
    (RuntimeConfig(instances=12), 8, (12, 1)),
    (RuntimeConfig(instances=3, intra_op_threads=3), 2, (3, 3)),  # as asked, oversubscribed
])
def test_threads_are_sized_to_the_cores(config: RuntimeConfig, cpus: int,
                                        expected: tuple[int, int]) -> None:
    threads = choose(config, cpus)
    assert (threads.instances, threads.intra_op_threads) == expected
    assert threads.inter_op_threads == 1 and not threads.spinning
    assert threads.busy_threads <= cpus + 1 or config.instances > cpus or expected == (3, 3)
    assert threads.oversubscribes(cpus) == (expected in ((3, 3), (12, 1)))


def test_spinning_is_off_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(add_constant(1).SerializeToString())
    default = OnnxSession(path, read_graph(path), RuntimeConfig())
    options = default._session.get_session_options()
    assert options.get_session_config_entry(SPINNING) == "0"
    assert options.intra_op_num_threads == default.threads.intra_op_threads
    assert choose(RuntimeConfig(session_config={SPINNING: "1"})).spinning


def test_runs_beyond_the_instances_wait(tmp_path: Path) -> None:
    """One instance: concurrent requests run one at a time on the one session."""
    path = tmp_path / "model.onnx"
    path.write_bytes(add_constant(1).SerializeToString())
    session = OnnxSession(path, read_graph(path), RuntimeConfig(instances=1))
    running, most = 0, 0
    lock = threading.Lock()
    run = session._session.run

    def counting(*args: object) -> object:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return run(*args)

    session._session.run = counting  # type: ignore[method-assign]
    x = np.ones((1, 1), np.float32)
    workers = [threading.Thread(target=session.run, args=({"x": x}, ["y"])) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert most == 1


def test_thread_pool_is_server_wide(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "runtime.json").write_text(json.dumps({"thread_pool": "global"}))
    with pytest.raises(ModelLoadError, match="set it in --runtime_config_file"):
        runtime_config.for_version(RuntimeConfig(), version)
    (version / "runtime.json").write_text(json.dumps({"instances": -1}))
    with pytest.raises(ModelLoadError, match="instances must be 0"):
        runtime_config.for_version(RuntimeConfig(), version)


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_global_pools_keep_threads_bounded_as_models_load(tmp_path: Path) -> None:
    """In the real server: 6 models on ONNX Runtime's global pools (2 intra-op threads,
    so per-session pools would add a thread per model) add no thread per model."""
    names = [f"m{i}" for i in range(6)]
    for i, name in enumerate(names):
        version = tmp_path / name / "1"
        version.mkdir(parents=True)
        (version / "model.onnx").write_bytes(add_constant(i).SerializeToString())
    runtime = tmp_path / "runtime.json"
    runtime.write_text(json.dumps({"thread_pool": "global", "instances": 1,
                                   "session": {"intra_op_threads": 2}}))

    def serve(models: list[str], log: str) -> tuple[ServerProcess, int]:
        config = tmp_path / f"{log}.config"
        config.write_text("model_config_list { " + " ".join(
            f'config {{ name: "{n}" base_path: "{tmp_path / n}" }}' for n in models) + " }")
        server = ServerProcess([f"--model_config_file={config}",
                                f"--runtime_config_file={runtime}", "--grpc_max_threads=4"],
                               tmp_path / f"{log}.log").start()
        with Client(server.address) as client:
            for i, name in enumerate(models):
                x = np.array([[1.0]], np.float32)
                assert client.predict(name, {"x": x})["y"].tolist() == [[1.0 + i]]
        assert server.process is not None
        return server, _threads(server.process.pid)

    one, alone = serve(names[:1], "one")
    one.stop()
    six, together = serve(names, "six")
    try:
        assert "ONNX Runtime global thread pools: 2 intra-op, 1 inter-op" in six.logs()
        assert together <= alone + 1, six.logs()[-2000:]
    finally:
        six.stop()


def test_describe_names_every_setting() -> None:
    text = Threads(2, 1, 1, False, False).describe()
    assert text == ("2 instance(s) x 1 intra-op thread(s), 1 inter-op, spinning off, "
                    "per-session pools")


def test_worker_processes_share_the_cores() -> None:
    from onnx_serving.server.runtime import threads

    whole = threads.cores()
    try:
        threads.share_cores(2)
        assert threads.cores() == max(1, whole // 2)
    finally:
        threads.share_cores(1)
    assert threads.cores() == whole
