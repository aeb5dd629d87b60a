"""The container images, built and run with a real engine (marker ``docker``).

Skipped where no Docker engine answers. The CPU image is built by ``make docker`` on
``BASE_IMAGE`` (from the environment, else the Makefile's default,
onnx-serving-base:bookworm, made by ``make docker-base`` when absent, so that no registry
is needed); skipped with the reason only when no base image can be had. The GPU image is
checked only when ``make docker-gpu`` has built it. Containers use the host's network, so
test traffic stays on the loopback address, or none at all (the KServe runtime's fixed
ports).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
import yaml
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.models import EXAMPLES
from tests.server_process import free_port

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("ONNX_SERVING_TEST_IMAGE", "onnx-serving:test")
GPU_IMAGE = os.environ.get("ONNX_SERVING_GPU_IMAGE", "onnx-serving-gpu")
HALF_PLUS_TWO = EXAMPLES / "models" / "half_plus_two"


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _make(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", *args, f"BIN={Path(sys.executable).parent}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _tail(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr).strip()[-600:]


def _present_or_pulled(image: str) -> str:
    """Why ``image`` cannot be had; empty when it is here or was pulled."""
    if docker("image", "inspect", image, check=False).returncode == 0:
        return ""
    pulled = docker("pull", image, check=False, timeout=600)
    return f"{image} is absent and cannot be pulled ({_tail(pulled)})" if pulled.returncode \
        else ""


def base_image() -> str:
    """BASE_IMAGE from the environment, else the Makefile's default, made from Debian's
    packages (no registry) where absent, else the registry's Python of the host's minor
    version (the wheels' ABI). Skips, saying why, only when none can be had."""
    wanted = os.environ.get("BASE_IMAGE")
    if wanted:
        if why := _present_or_pulled(wanted):
            pytest.skip(f"no base image: BASE_IMAGE={why}")
        return wanted
    found = re.search(r"^DEBIAN_BASE := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile names its default base image"
    default = found.group(1)
    if docker("image", "inspect", default, check=False).returncode == 0:
        return default
    if shutil.which("mmdebstrap") is None:
        reasons = [f"{default} is absent and mmdebstrap, which `make docker-base` makes it "
                   "with, is not installed"]
    else:
        made = _make("docker-base", timeout=1200)
        if made.returncode == 0:
            return default
        reasons = [f"{default} is absent and `make docker-base` failed: {_tail(made)}"]
    registry = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    if why := _present_or_pulled(registry):
        pytest.skip("no base image: " + "; ".join([*reasons, why]))
    return registry


@pytest.fixture(scope="session")
def image() -> str:
    if not engine_available():
        pytest.skip("no Docker engine answers here (.ci/run starts one where it can)")
    built = _make("docker", f"IMAGE={IMAGE}", f"BASE_IMAGE={base_image()}")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


class Container:
    def __init__(self, *run_args: str) -> None:
        self.id = docker("run", "--detach", *run_args).stdout.strip()

    def logs(self) -> str:
        done = docker("logs", self.id, check=False)
        return done.stdout + done.stderr

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.logs():
            state = json.loads(docker("inspect", self.id).stdout)[0]["State"]
            assert state["Running"], self.logs()
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.2)

    def remove(self) -> None:
        docker("rm", "--force", self.id, check=False)


@pytest.fixture
def served(image: str) -> Iterator[tuple[Container, int, int]]:
    """The image as tensorflow/serving is run: MODEL_NAME, the model under /models, and
    flags after the image name (here, ports free on this machine)."""
    port, rest_port = free_port(), free_port()
    container = Container(
        "--network", "host", "-e", "MODEL_NAME=half_plus_two",
        "-v", f"{HALF_PLUS_TWO}:/models/half_plus_two:ro",
        image, f"--port={port}", f"--rest_api_port={rest_port}",
    )
    try:
        container.wait_for("Exporting HTTP/REST API")
        yield container, port, rest_port
    finally:
        container.remove()


def test_image_answers_tf_serving_clients_and_stops_cleanly(served) -> None:
    container, port, rest_port = served
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert tf.make_ndarray(stub.Predict(request, 10).outputs["y"]).tolist() == [[3.0]]
    answer = requests.post(f"http://127.0.0.1:{rest_port}/v1/models/half_plus_two:predict",
                           json={"instances": [1.0, 2.0, 5.0]}, timeout=10)
    assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert docker("exec", container.id, "id", "-u").stdout.strip() == "1000"
    started = time.monotonic()
    docker("stop", container.id)
    assert time.monotonic() - started < 5
    state = json.loads(docker("inspect", container.id).stdout)[0]["State"]
    assert state["ExitCode"] == 0, container.logs()


def test_image_is_small(image: str) -> None:
    """No compilers, no pip, no test dependencies."""
    def run(command: str) -> str:
        return docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                      command).stdout

    assert run("for c in gcc cc g++ make pip pip3 pytest; do command -v $c; done; true") == ""
    installed = run("ls /opt/onnx-serving/lib/python3*/site-packages").split()
    assert "onnxruntime" in installed and "onnx_serving" in installed
    # What converted JPEG-input and string-op models need at load.
    assert {"simplejpeg", "PIL", "onnxruntime_extensions"} <= set(installed)
    assert not {"tensorflow", "tf2onnx", "pytest", "pip", "setuptools"} & set(installed)


def test_kserve_runtime_container_runs_as_written(image: str) -> None:
    """The ServingRuntime's command, args and user, exactly, with a model at /mnt/models.
    Its ports are fixed (9000, 8080), so the container gets a network of its own with only
    a loopback, and is asked from inside."""
    runtime = yaml.safe_load((ROOT / "deploy" / "kserve" / "servingruntime.yaml").read_text())
    spec = runtime["spec"]
    container_spec = spec["containers"][0]
    args = [a.replace("{{.Name}}", "half-plus-two") for a in container_spec["args"]]
    user = str(container_spec["securityContext"]["runAsUser"])
    container = Container(
        "--network", "none", "--user", f"{user}:{user}",
        "-v", f"{HALF_PLUS_TWO}:/mnt/models:ro",
        "--entrypoint", container_spec["command"][0], image, *args,
    )
    try:
        container.wait_for("Exporting HTTP/REST API")
        probe = container_spec["readinessProbe"]["httpGet"]
        metrics = spec["annotations"]["prometheus.kserve.io/path"]
        port = spec["annotations"]["prometheus.kserve.io/port"]
        script = f"""
import urllib.request, numpy as np
from onnx_serving.client import Client
with Client("127.0.0.1:9000") as client:
    print(client.predict("half-plus-two", {{"x": np.array([[2.0]], np.float32)}})["y"].tolist())
for path in ("{probe['path']}", "{container_spec['livenessProbe']['httpGet']['path']}",
             "{metrics}"):
    with urllib.request.urlopen(f"http://127.0.0.1:{probe['port']}" + path) as answer:
        print(answer.status, answer.read().decode()[:40].splitlines()[0])
"""
        out = docker("exec", container.id, "python3", "-c", script).stdout.splitlines()
        assert out[0] == "[[3.0]]"
        assert out[1:3] == ["200 ready", "200 live"]
        assert out[3].startswith("200 # HELP")
        assert port == "8080" == str(probe["port"])
        # As Kubernetes stops it: SIGTERM, and SIGKILL after terminationGracePeriodSeconds.
        grace = 30
        started = time.monotonic()
        docker("stop", f"--time={grace}", container.id, timeout=60)
        elapsed = time.monotonic() - started
        state = json.loads(docker("inspect", container.id).stdout)[0]["State"]
        assert state["ExitCode"] == 0, container.logs()
        assert 10 <= elapsed < grace  # it answered on for --shutdown_delay_seconds=10
    finally:
        container.remove()


def test_gpu_image_lists_cuda_and_tensorrt_and_their_libraries_resolve() -> None:
    """No GPU here: checks what the image holds, not that a GPU runs it. libcuda.so.1 is
    the driver's, mounted from the host by the NVIDIA container toolkit, so it is the one
    library left unresolved."""
    if not engine_available() or docker("image", "inspect", GPU_IMAGE, check=False).returncode:
        pytest.skip(f"no {GPU_IMAGE} image here (make docker-gpu builds it)")
    labels = json.loads(docker("image", "inspect", GPU_IMAGE).stdout)[0]["Config"]["Labels"]
    script = """
import glob, subprocess, onnxruntime
capi = onnxruntime.__path__[0] + "/capi/"
print(" ".join(onnxruntime.get_available_providers()))
for name in ("cuda", "tensorrt"):
    path = capi + f"libonnxruntime_providers_{name}.so"
    missing = [l.split()[0] for l in subprocess.run(["ldd", path], capture_output=True,
               text=True).stdout.splitlines() if "not found" in l]
    print(name, ",".join(missing) or "-")
import ctypes
for lib in ("libcudnn.so.9", "libcufft.so.12", "libcublasLt.so.13", "libnvrtc.so.13"):
    ctypes.CDLL(lib)  # loaded by name at run time, not linked: must resolve all the same
print("loaded")
"""
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "python3", GPU_IMAGE,
                 "-c", script, timeout=300).stdout.splitlines()
    providers = out[0].split()
    assert "CUDAExecutionProvider" in providers and "TensorrtExecutionProvider" in providers
    assert out[1] == "cuda libcuda.so.1"
    assert out[-1] == "loaded"
    if (labels or {}).get("onnx-serving.tensorrt") != "1":
        pytest.xfail("image built with TENSORRT=0: TensorRT's libraries are not in it")
    assert out[2] == "tensorrt -"
