"""Per-model runtime configuration: providers without silent fallback, session options,
caches and IO binding, on this CPU-only machine. GPU checks skip without a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

from onnx_serving.client import Client
from onnx_serving.server.errors import ConfigError, ModelLoadError
from onnx_serving.server.runtime import config as runtime_config
from onnx_serving.server.runtime.config import Provider, RuntimeConfig
from onnx_serving.server.runtime.graph import read_graph
from onnx_serving.server.runtime.ort_errors import ORT_ERRORS
from onnx_serving.server.runtime.session import OnnxSession, _provider_options, _session_options
from onnx_serving.server.runtime.threads import choose
from tests.models import add_constant
from tests.server_process import ServerProcess

# Compiled in: onnxruntime-gpu is installed (it lists CUDA with or without a device).
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def cuda_runs() -> bool:
    """A CUDA session really runs here: the build has it and a device and its libraries
    load (ONNX Runtime otherwise falls back to the CPU with only a warning)."""
    if not HAS_CUDA:
        return False
    model = add_constant(1.0).SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        made = ort.InferenceSession(model, options, providers=["CUDAExecutionProvider"])
    except ORT_ERRORS:  # refused: no usable CUDA here, which is all this asks
        return False
    return "CUDAExecutionProvider" in made.get_providers()


CUDA_RUNS = cuda_runs()


def write_model(version_dir: Path, model=None, runtime: dict | None = None) -> Path:
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "model.onnx"
    path.write_bytes((model or add_constant(1)).SerializeToString())
    if runtime is not None:
        (version_dir / "runtime.json").write_text(json.dumps(runtime))
    return path


def session(path: Path, **config: object) -> OnnxSession:
    return OnnxSession(path, read_graph(path), RuntimeConfig(**config))  # type: ignore[arg-type]


def test_files_override_in_order(tmp_path: Path) -> None:
    (tmp_path / "server.json").write_text(json.dumps({
        "session": {"intra_op_threads": 2, "graph_optimization_level": "basic"},
        "cache_dir": "/var/cache/x",
    }))
    base = runtime_config.server_default(str(tmp_path / "server.json"), 4, 1)
    assert (base.intra_op_threads, base.inter_op_threads) == (2, 1)  # the file wins over flags
    write_model(tmp_path / "m" / "1", runtime={"io_binding": True,
                                               "session": {"execution_mode": "parallel"}})
    (tmp_path / "m" / "runtime.json").write_text(json.dumps({
        "execution_providers": ["CUDAExecutionProvider", {"name": "CPUExecutionProvider"}],
        "allow_fallback": True,
    }))
    config = runtime_config.for_version(base, tmp_path / "m" / "1")
    assert config.provider_names == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert config.allow_fallback and config.io_binding
    assert (config.execution_mode, config.graph_optimization_level) == ("parallel", "basic")
    assert config.cache_dir == "/var/cache/x"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"providers": []}, "unknown keys ['providers']"),
        ({"execution_providers": []}, "execution_providers is empty"),
        ({"execution_providers": [3]}, "each execution provider is a name"),
        ({"session": {"graph_optimization_level": "max"}}, "must be one of"),
        ({"session": {"threads": 2}}, "session takes the keys"),
        ({"allow_fallback": "yes"}, "allow_fallback must be a bool"),
    ],
)
def test_bad_runtime_files_name_the_file(tmp_path: Path, document: dict, message: str) -> None:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ModelLoadError) as info:
        runtime_config.merge_file(RuntimeConfig(), path)
    assert str(path) in info.value.message and message in info.value.message
    with pytest.raises(ConfigError):
        runtime_config.server_default(str(path), 0, 0)


@pytest.mark.skipif(HAS_CUDA, reason="checks the CPU-only build's refusal")
def test_cuda_on_a_cpu_build_fails_clearly_or_falls_back_when_allowed(tmp_path: Path) -> None:
    path = write_model(tmp_path / "1")
    cuda = (Provider("CUDAExecutionProvider", {"device_id": 0}), Provider("CPUExecutionProvider"))
    with pytest.raises(ModelLoadError) as info:
        session(path, providers=cuda)
    assert "execution provider CUDAExecutionProvider for model.onnx is not in this ONNX " \
        "Runtime build" in info.value.message
    assert "onnxruntime-gpu" in info.value.message
    fallback = session(path, providers=cuda, allow_fallback=True)
    assert fallback.providers == ["CPUExecutionProvider"]


def test_session_options_are_applied(tmp_path: Path) -> None:
    path = write_model(tmp_path / "1")
    options = session(path, intra_op_threads=1, inter_op_threads=1, execution_mode="parallel",
                      enable_mem_pattern=False, graph_optimization_level="basic",
                      session_config={"session.use_env_allocators": "1"})
    applied = options._session.get_session_options()
    assert (applied.intra_op_num_threads, applied.inter_op_num_threads) == (1, 1)
    assert applied.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert not applied.enable_mem_pattern
    # ONNX Runtime may run a graph without parallel branches sequentially anyway; what we
    # hand it is what was asked for.
    parallel = RuntimeConfig(execution_mode="parallel")
    built = _session_options(parallel, choose(parallel))
    assert built.execution_mode == ort.ExecutionMode.ORT_PARALLEL


def test_optimized_model_is_cached_and_reused(tmp_path: Path) -> None:
    path = write_model(tmp_path / "1")
    cache = tmp_path / "cache"
    x = np.ones((2, 1), np.float32)
    first = session(path, cache_dir=str(cache))
    [cached] = cache.glob("*-all.onnx")
    assert not list(cache.glob("*.partial"))
    again = session(path, cache_dir=str(cache))  # loads the optimized file, skips optimizing
    opts = again._session.get_session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert first.run({"x": x}, ["y"])[0].tolist() == again.run({"x": x}, ["y"])[0].tolist()
    write_model(tmp_path / "1", add_constant(2))  # a new model is never served from the cache
    changed = session(path, cache_dir=str(cache))
    assert changed.run({"x": x}, ["y"])[0].tolist() == [[3.0], [3.0]]
    assert len(list(cache.glob("*-all.onnx"))) == 2 and cached.exists()


def test_tensorrt_caches_get_a_path_that_survives_reloads(tmp_path: Path) -> None:
    path = write_model(tmp_path / "1")
    config = RuntimeConfig(cache_dir=str(tmp_path / "cache"))
    trt = Provider("TensorrtExecutionProvider",
                   {"trt_engine_cache_enable": True, "trt_timing_cache_enable": "1",
                    "trt_fp16_enable": True, "trt_max_workspace_size": 1 << 30})
    first = _provider_options(trt, path, config)
    assert first == _provider_options(trt, path, config)  # the same on every load
    assert first["trt_engine_cache_path"].startswith(str(tmp_path / "cache" / "tensorrt"))
    assert Path(first["trt_timing_cache_path"]).is_dir()
    assert first["trt_fp16_enable"] == "True" and first["trt_max_workspace_size"] == str(1 << 30)
    given = Provider("TensorrtExecutionProvider",
                     {"trt_engine_cache_enable": True, "trt_engine_cache_path": "/mine"})
    assert _provider_options(given, path, config)["trt_engine_cache_path"] == "/mine"
    write_model(tmp_path / "1", add_constant(5))
    assert _provider_options(trt, path, config)["trt_engine_cache_path"] != \
        first["trt_engine_cache_path"]


def test_server_refuses_a_missing_provider_and_shows_active_ones(tmp_path: Path) -> None:
    """In the real server: the load fails with the reason; other models keep serving; the
    active providers show in metadata."""
    trt_first = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    write_model(tmp_path / "gpu" / "1", runtime={"execution_providers": trt_first})
    write_model(tmp_path / "cpu" / "1", runtime={"io_binding": True})
    config = tmp_path / "models.config"
    config.write_text("model_config_list { " + " ".join(
        f'config {{ name: "{n}" base_path: "{tmp_path / n}" }}' for n in ("gpu", "cpu")) + " }")
    server = ServerProcess([f"--model_config_file={config}", "--max_num_load_retries=0"],
                           tmp_path / "server.log").start()
    try:
        with Client(server.address) as client:
            [status] = client.status("gpu")
            if not HAS_CUDA:
                assert status.state == "END"
                assert "TensorrtExecutionProvider" in status.error_message
            x = np.array([[1.0]], np.float32)
            assert client.predict("cpu", {"x": x})["y"].tolist() == [[2.0]]
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=["signature_def", "onnx_serving/runtime"]
        )
        request.model_spec.name = "cpu"
        with grpc.insecure_channel(server.address) as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
                request, 10
            )
        from google.protobuf import struct_pb2

        runtime = struct_pb2.Struct()
        response.metadata["onnx_serving/runtime"].Unpack(runtime)
        assert list(runtime["active_providers"]) == ["CPUExecutionProvider"]
        assert runtime["config"]["io_binding"] is True
        assert "Successfully loaded servable version {name: cpu version: 1}" in server.logs()
        assert "on CPUExecutionProvider" in server.logs()
    finally:
        server.stop()
