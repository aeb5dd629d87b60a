"""Many models on one server: threads, memory, and one model's p99 while another swaps.

20 models by default, a quarter MobileNetV2-sized (the cached MobileNetV2, each its own
model) and the rest small (a 3-layer 256-wide MLP made with onnx.helper). Measured:

- **threads** of the server process with every model loaded, against the same server
  with one small model: bounded means the difference does not grow with the models;
- **RSS** of the server with every model, against a bare process that creates the same
  sessions alone (same options, one run each): both as growth over the same process with
  one small model, so the server's own imports cancel out;
- **p99 while another model swaps**: one client on a MobileNetV2 (A) and one on another
  (B); B gets new versions, one after the other, and each is loaded and swapped in
  while both keep sending, with a steady window before each. A's p99 during the swaps
  against its steady p99 (TF Serving #1866: 20 ms to over 100 ms), and B's own
  (swap-while-serving).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench.suite import payloads
from bench.suite.echo_server import PATH
from bench.suite.models import BenchModel
from bench.suite.processes import ServerProcess
from onnx_serving.tune.server import free_port

Log = Callable[[str], None]
SMALL_WIDTH = 256
_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
            ("grpc.use_local_subchannel_pool", 1)]


@dataclass
class ManyModels:
    models: int = 0
    large: int = 0
    threads_one: int = 0
    threads_all: int = 0
    pool_threads_all: int = 0  # one intra-op pool per model, cores - 1 threads each
    rss_server_one_mib: float = 0.0
    rss_server_all_mib: float = 0.0
    rss_alone_one_mib: float = 0.0
    rss_alone_all_mib: float = 0.0
    swaps: int = 0
    swap_seconds: list[float] = field(default_factory=list)
    # (steady p99 ms, during-swaps p99 ms, requests during swaps, errors) per model role
    bystander: tuple[float, float, int, int] = (0.0, 0.0, 0, 0)
    swapping: tuple[float, float, int, int] = (0.0, 0.0, 0, 0)

    @property
    def rss_ratio(self) -> float:
        grown_alone = self.rss_alone_all_mib - self.rss_alone_one_mib
        return (self.rss_server_all_mib - self.rss_server_one_mib) / grown_alone


def small_model(path: Path, seed: int) -> None:
    """y = relu(relu(x W1 + b1) W2 + b2) W3 + b3, x float32 [batch, 256]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, last = [], [], "x"
    for i in range(3):
        w = rng.standard_normal((SMALL_WIDTH, SMALL_WIDTH)).astype(np.float32) * 0.05
        b = np.zeros(SMALL_WIDTH, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        last = f"a{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SMALL_WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", SMALL_WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _version(base: Path, number: int, source: BenchModel) -> None:
    """A new version of a MobileNetV2 copy: its serving graph, linked, alone (the converted
    folder also holds a second signature's copy of the graph, a second session)."""
    target = base / str(number)
    staging = base / f".{number}"
    staging.mkdir(parents=True)
    (staging / "model.onnx").symlink_to(source.onnx_file)
    staging.rename(target)  # complete before the poller sees it


def _repository(folder: Path, mobilenet: BenchModel, count: int) -> tuple[list[str], list[str]]:
    large = [f"mobilenet_{i}" for i in range(max(2, count // 4))]
    small = [f"small_{i}" for i in range(count - len(large))]
    for name in large:
        _version(folder / name, 1, mobilenet)
    for i, name in enumerate(small):
        small_model(folder / name / "1" / "model.onnx", i)
    return large, small


def _config(folder: Path, names: list[str], file: str) -> Path:
    path = folder / file
    path.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{folder / n}" model_platform: "onnx" }}'
        for n in names) + " }\n")
    return path


def _status(pid: int) -> tuple[int, float]:
    """Threads and RSS (MiB) of a process."""
    text = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    rss = int(re.search(r"^VmRSS:\s+(\d+)", text, re.M).group(1)) / 1024  # type: ignore[union-attr]
    return threads, rss


def _request(name: str, large: bool, mobilenet: BenchModel) -> bytes:
    from onnx_serving.codec.tensors import encode_into
    from onnx_serving.protos.tensorflow_serving.apis import predict_pb2

    if large:
        request = predict_pb2.PredictRequest.FromString(payloads.request_bytes(mobilenet))
    else:
        request = predict_pb2.PredictRequest()
        encode_into(request.inputs["x"], np.ones((1, SMALL_WIDTH), np.float32))
    request.model_spec.name = name
    return request.SerializeToString()


def _serve(folder: Path, names: list[str], label: str, extra: list[str]) -> ServerProcess:
    port = free_port()
    server = ServerProcess("onnx_serving.server", [
        "serve", f"--port={port}",
        f"--model_config_file={_config(folder, names, label + '.config')}",
        "--file_system_poll_wait_seconds=1", *extra], port, label=f"many-{label}")
    server.wait_ready()
    return server


def _touch_all(server: ServerProcess, requests: dict[str, bytes]) -> None:
    """One request per model: arenas allocated, as after any traffic."""
    with grpc.insecure_channel(server.address, options=_OPTIONS) as channel:
        call = channel.unary_unary(PATH)
        for request in requests.values():
            for _ in range(60):  # the ports open before every model is AVAILABLE
                try:
                    call(request, timeout=60)
                    break
                except grpc.RpcError:
                    time.sleep(0.5)


_ALONE = """
import sys, json, re, numpy as np, onnxruntime as ort
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
files, options = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sessions = []
for path in files:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = options["intra"], 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in i.shape]
    s.run(None, {i.name: np.ones(shape, np.float32)})
    sessions.append(s)
print(rss())
"""


def _alone_rss(files: list[Path], intra: int) -> float:
    """RSS of a bare process holding the same sessions (one run each)."""
    done = subprocess.run(
        [sys.executable, "-c", _ALONE, json.dumps([str(f) for f in files]),
         json.dumps({"intra": intra})], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


class _Client:
    """One closed-loop client; keeps (end time, latency) of every request."""

    def __init__(self, address: str, request: bytes) -> None:
        self.records: list[tuple[float, float]] = []
        self.errors: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(address, request), daemon=True)
        self._thread.start()

    def _loop(self, address: str, request: bytes) -> None:
        with grpc.insecure_channel(address, options=_OPTIONS) as channel:
            call = channel.unary_unary(PATH)
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    call(request, timeout=60)
                except grpc.RpcError as exc:
                    self.errors.append((time.perf_counter(), f"{exc.code().name}"))
                    continue
                ended = time.perf_counter()
                self.records.append((ended, ended - began))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def p99_ms(self, windows: list[tuple[float, float]]) -> tuple[float, int, int]:
        inside = [lat for end, lat in self.records if any(a <= end <= b for a, b in windows)]
        errors = sum(1 for t, _ in self.errors if any(a <= t <= b for a, b in windows))
        p99 = float(np.percentile(inside, 99) * 1000) if inside else float("nan")
        return p99, len(inside), errors


def _available(address: str, model: str, version: int) -> bool:
    from onnx_serving.client import Client, ServingError

    try:
        with Client(address) as client:
            states = {s.version: s.state for s in client.status(model, timeout=5)}
    except (grpc.RpcError, ServingError):
        return False
    return states.get(version) == "AVAILABLE" and all(
        v == version or s == "END" for v, s in states.items())


def run(mobilenet: BenchModel, count: int, steady_seconds: float, swaps: int,
        extra: list[str], log: Log) -> ManyModels:
    from onnx_serving.server.runtime.config import RuntimeConfig
    from onnx_serving.server.runtime.threads import choose

    found = ManyModels(models=count)
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        folder = Path(tmp)
        large, small = _repository(folder, mobilenet, count)
        found.large = len(large)
        names = large + small
        requests = {n: _request(n, n in large, mobilenet) for n in names}
        files = [folder / n / "1" / "model.onnx" for n in names]
        intra = choose(RuntimeConfig()).intra_op_threads
        found.pool_threads_all = count * (intra - 1)

        log(f"many models: one small model alone, then all {count}")
        one = _serve(folder, small[:1], "one", extra)
        try:
            _touch_all(one, {small[0]: requests[small[0]]})
            found.threads_one, found.rss_server_one_mib = _status(one.pid)
        finally:
            one.stop()
        server = _serve(folder, names, "all", extra)
        try:
            _touch_all(server, requests)
            found.threads_all, found.rss_server_all_mib = _status(server.pid)
            found.rss_alone_one_mib = _alone_rss(files[len(large):len(large) + 1], intra)
            found.rss_alone_all_mib = _alone_rss(files, intra)
            log(f"many models: threads {found.threads_one} -> {found.threads_all}; RSS grew "
                f"{found.rss_server_all_mib - found.rss_server_one_mib:.0f} MiB in the server, "
                f"{found.rss_alone_all_mib - found.rss_alone_one_mib:.0f} MiB alone")

            a, b = large[0], large[1]
            clients = {a: _Client(server.address, requests[a]),
                       b: _Client(server.address, requests[b])}
            time.sleep(1.0)  # past the first requests
            # Steady and swapping windows alternate, so drift on a shared machine lands
            # on both.
            steady, windows = [], []
            for version in range(2, 2 + swaps):
                quiet = time.perf_counter()
                time.sleep(steady_seconds / swaps)
                steady.append((quiet, time.perf_counter()))
                began = time.perf_counter()
                _version(folder / b, version, mobilenet)
                while not _available(server.address, b, version):
                    time.sleep(0.05)
                ended = time.perf_counter()
                found.swap_seconds.append(ended - began)
                windows.append((began, ended))
                time.sleep(1.0)  # the old version unloads here: part of the window below
                windows[-1] = (began, time.perf_counter())
            for client in clients.values():
                client.stop()
            found.swaps = swaps
            for role, model in (("bystander", a), ("swapping", b)):
                steady_p99, _, _ = clients[model].p99_ms(steady)
                during, n, errors = clients[model].p99_ms(windows)
                setattr(found, role, (steady_p99, during, n, errors))
            log(f"many models: {a} p99 {found.bystander[0]:.1f} ms steady, "
                f"{found.bystander[1]:.1f} ms while {b} swaps; {b} itself "
                f"{found.swapping[0]:.1f} -> {found.swapping[1]:.1f} ms")
        finally:
            server.stop()
    return found


def describe(found: ManyModels) -> list[str]:
    """Markdown lines for the report."""
    return [
        f"{found.models} models ({found.large} MobileNetV2, {found.models - found.large} "
        f"small MLPs), server defaults:",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| server threads, 1 small model | {found.threads_one} |",
        f"| server threads, all {found.models} models | {found.threads_all} (each model's intra-op "
        f"pool: cores - 1 threads, {found.pool_threads_all} for all) |",
        f"| RSS growth 1 -> {found.models} models, server | "
        f"{found.rss_server_all_mib - found.rss_server_one_mib:.0f} MiB "
        f"({found.rss_server_one_mib:.0f} -> {found.rss_server_all_mib:.0f}) |",
        f"| RSS growth, the same sessions created alone | "
        f"{found.rss_alone_all_mib - found.rss_alone_one_mib:.0f} MiB "
        f"({found.rss_alone_one_mib:.0f} -> {found.rss_alone_all_mib:.0f}) |",
        f"| swaps of model B (load, then swap) | {found.swaps}, "
        + ", ".join(f"{s:.1f}" for s in found.swap_seconds) + " s |",
        f"| A (bystander) p99 steady / during B's swaps | {found.bystander[0]:.1f} / "
        f"{found.bystander[1]:.1f} ms ({found.bystander[2]} requests, {found.bystander[3]} "
        "errors) |",
        f"| B (swapping) p99 steady / during its swaps | {found.swapping[0]:.1f} / "
        f"{found.swapping[1]:.1f} ms ({found.swapping[2]} requests, {found.swapping[3]} "
        "errors) |",
    ]


def main() -> None:
    """``python -m bench.suite.many``: this case alone."""
    from bench.suite import models

    mobilenet = models.ensure("mobilenet_v2")
    found = run(mobilenet, int(os.environ.get("MANY_MODELS", "20")), 5.0, 3, [], print)
    print("\n".join(describe(found)))


if __name__ == "__main__":
    main()
