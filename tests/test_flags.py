"""tensorflow_model_server's flags and config file, parsed without starting a server."""

from __future__ import annotations

import ctypes.util
import logging
from dataclasses import fields
from pathlib import Path

import pytest

from onnx_serving.server.api.grpc.server import parse_channel_arguments
from onnx_serving.server.errors import ConfigError, ModelLoadError
from onnx_serving.server.flags import NO_EFFECT, REFUSED, ServerOptions, parse_flags, usage
from onnx_serving.server.repository.model_config import read_config_file
from onnx_serving.server.repository.policy import All, Latest, Specific
from onnx_serving.server.runtime import config as runtime_config
from onnx_serving.server.runtime import gpu_memory, session
from onnx_serving.server.runtime.config import Provider
from onnx_serving.server.runtime.gpu_memory import CUDA, with_memory_limit
from onnx_serving.server.workers import worker_argv


def test_defaults_are_tf_servings() -> None:
    options = parse_flags(["--model_base_path=/models/m"])
    assert options == ServerOptions(model_base_path="/models/m")
    assert (options.port, options.model_name) == (8500, "default")
    assert options.grpc_threads > 0


def test_flag_syntaxes() -> None:
    options = parse_flags([
        "--port=9000", "--model_name", "m", "--model_base_path=/x",
        "--enable_serialization_as_tensor_content", "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_session_parallelism=3", "--grpc_socket_path=/tmp/s.sock",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
    ])
    assert options.port == 9000 and options.model_name == "m"
    assert options.enable_serialization_as_tensor_content is True
    assert (options.intra_op_threads, options.inter_op_threads) == (2, 3)
    assert parse_channel_arguments(options.grpc_channel_arguments) == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
        (["--port=eighty"], "Illegal value 'eighty' for flag --port"),
        (["--mixed_precision=bfloat16"], "Flag --mixed_precision=bfloat16 is not supported"),
        (["--use_tflite_model"], "not TensorFlow Lite"),
        (["--platform_config_file=/p.config"], "--runtime_config_file"),
        (["--per_process_gpu_memory_fraction=1.5"], "unified memory"),
        (["--per_process_gpu_memory_fraction=half"], "expected a number"),
        (["--use_alts_credentials=true"], "--use_alts_credentials=true"),
        (["--rest_api_enable_ssl"], "set it too"),
        (["--rest_api_port=8500"], "--port and --rest_api_port must differ"),
        (["--version_transition_policy=eager"], "expected availability_preserving or"),
        (["--max_num_load_retries=-1"], "expected a count of 0 or more"),
        (["--port=0"], "at least one of --port or --grpc_socket_path"),
        (["positional"], "Unexpected argument 'positional'"),
        (["--port=70000"], "expected a port from 0 to 65535"),
        (["--rest_api_port=-1"], "expected a port from 0 to 65535"),
        (["--grpc_max_threads=-1"], "expected 0 (four per CPU) or more threads"),
        (["--file_system_poll_wait_seconds=99999999999"], "expected a 32-bit integer"),
        (["--shutdown_delay_seconds=2147483648"], "expected a 32-bit integer"),
        (["--load_retry_interval_micros=9223372036854775808"], "expected a 64-bit integer"),
    ],
)
def test_refused_flags(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_flags(argv)
    assert message in info.value.message


def test_worker_flags_written_either_way() -> None:
    """Each of --num_workers' processes gets the same flags, as one worker of many."""
    assert worker_argv(["--num_workers", "2", "--model_name", "num_workers", "--reuse_port",
                        "--port=9000", "--num_workers=3", "--reuse_port=false"]) == [
        "--model_name", "num_workers", "--port=9000", "--num_workers=1", "--reuse_port=true"]
    assert parse_flags(["--model_base_path=/m", "--load_retry_interval_micros=99999999999"]
                       ).load_retry_interval_micros == 99999999999


def test_refused_flags_at_their_default_are_accepted() -> None:
    parse_flags([
        "--model_base_path=/m", "--rest_api_port=0", "--ssl_config_file=",
        "--file_system_poll_wait_seconds=0", "--enable_model_warmup=true",
        "--use_alts_credentials=false", "--mixed_precision=", "--prefer_tflite_model=0",
    ])


def test_flags_without_effect_are_accepted_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    argv = ["--model_base_path=/m", *(f"--{name}" if name in BOOLEAN else f"--{name}=x"
                                      for name in NO_EFFECT)]
    with caplog.at_level(logging.INFO, logger="onnx_serving.server.flags"):
        assert parse_flags(argv) == parse_flags(["--model_base_path=/m"])
    lines = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    assert len(lines) == len(NO_EFFECT)  # one each
    assert any(line.startswith("Flag --xla_cpu_compilation_enabled=true has no effect")
               for line in lines)


def test_mapped_flags() -> None:
    options = parse_flags([
        "--model_base_path=/m", "--per_process_gpu_memory_fraction=0.5",
        "--rest_api_enable_cors_support=true",
    ])
    assert options.per_process_gpu_memory_fraction == 0.5
    assert options.rest_api_enable_cors_support is True


def test_channel_arguments_as_tf_parses_them() -> None:
    """absl::SimpleAtoi into an int32: ints where they parse, strings otherwise."""
    assert parse_channel_arguments(
        "grpc.keepalive_time_ms=100, a=+7,b= 8 ,c=1_000,d=2147483648,e=-2147483648,f=x=y"
    ) == [("grpc.keepalive_time_ms", 100), ("a", 7), ("b", 8), ("c", "1_000"),
          ("d", "2147483648"), ("e", -2147483648), ("f", "x")]


def test_gpu_memory_fraction_sets_the_cuda_limit_per_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Checked on the options built; the device's total comes from the CUDA driver."""
    totals = {0: 80 << 30, 1: 16 << 30}
    assert with_memory_limit({"device_id": 1}, 0.5, totals.__getitem__) == {
        "device_id": 1, "gpu_mem_limit": 8 << 30
    }
    assert with_memory_limit({}, 0.25, totals.__getitem__) == {"gpu_mem_limit": 20 << 30}
    assert with_memory_limit({"gpu_mem_limit": 5}, 0.5, totals.__getitem__) == {
        "gpu_mem_limit": 5  # runtime.json's own limit wins
    }
    assert with_memory_limit({"device_id": 0}, 0.0, totals.__getitem__) == {"device_id": 0}

    config = runtime_config.server_default("", 0, 0, gpu_memory_fraction=0.5)
    monkeypatch.setattr(gpu_memory, "device_memory", totals.__getitem__)
    cuda = session._provider_options(Provider(CUDA, {"device_id": 0}), tmp_path, config)
    assert cuda == {"device_id": "0", "gpu_mem_limit": str(40 << 30)}
    cpu = session._provider_options(Provider(runtime_config.CPU), tmp_path, config)
    assert cpu == {}


def test_gpu_memory_without_a_cuda_driver_fails_the_load_clearly() -> None:
    if ctypes.util.find_library("cuda"):
        pytest.skip("a CUDA driver is installed")
    with pytest.raises(ModelLoadError, match="needs the CUDA driver"):
        gpu_memory.device_memory.__wrapped__(0)


def test_convert_takes_saved_model_tags() -> None:
    from onnx_serving.migration import convert

    assert convert.parse_args(["a", "b", "--saved_model_tags=serve"]).tag == "serve"
    with pytest.raises(SystemExit):
        convert.parse_args(["a", "b", "--saved_model_tags=serve,gpu"])


BOOLEAN = {"flush_filesystem_caches", "enable_profiler", "xla_cpu_compilation_enabled",
           "remove_unused_fields_from_bundle_metagraph", "enable_model_warmup_in_parallel"}


def test_bad_channel_arguments() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_channel_arguments("grpc.keepalive_time_ms")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.config"
    path.write_text(text)
    return path


def test_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, """
model_config_list {
  config { name: "a" base_path: "/models/a" model_platform: "tensorflow" }
  config {
    name: "b" base_path: "rel/b" model_platform: "onnx"
    model_version_policy { specific { versions: 1 versions: 3 } }
    version_labels { key: "stable" value: 1 }
  }
  config { name: "c" base_path: "/c" model_version_policy { all {} } }
  config { name: "d" base_path: "/d" model_version_policy { latest { num_versions: 2 } } }
}""")
    a, b, c, d = read_config_file(path)
    assert (a.name, a.base_path, a.policy) == ("a", Path("/models/a"), Latest(1))
    assert b.base_path == tmp_path / "rel" / "b"
    assert b.policy == Specific(frozenset({1, 3})) and dict(b.labels) == {"stable": 1}
    assert c.policy == All() and d.policy == Latest(2)
    assert Latest(2).select([1, 5, 3]) == {3, 5} and b.policy.select([1, 2]) == {1}


def test_bad_config_file_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'model_config_list {\n  config {\n    name: "a"\n    bogus: 1\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    message = info.value.message
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in message
    assert f"{path}:4:" in message and "bogus" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model_config_list { config { name: "a" base_path: "/a" }'
         ' config { name: "a" base_path: "/b" } }', "Illegal to list model a multiple times"),
        ('model_config_list { config { name: "a" } }', "Model a has no base_path"),
        ('model_config_list { config { base_path: "/a" } }', "has no name"),
        ('model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }',
         "model_platform 'pytorch'"),
        ('custom_model_config { }', "custom_model_config is not supported"),
    ],
)
def test_invalid_configs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_config_file(write(tmp_path, text))
    assert message in info.value.message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read model config file"):
        read_config_file(tmp_path / "absent.config")


def test_every_flag_is_described_in_help_and_readme() -> None:
    """`serve --help` says what each flag does, and the README's flag table names each."""
    text = usage()
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("## Flags"):readme.index("## TLS")]
    for option in fields(ServerOptions):
        description = option.metadata["description"]
        assert description, option.name
        assert f"  --{option.name}=" in text and f"\n      {description}\n" in text + "\n"
        assert f"`--{option.name}`" in table, f"--{option.name} is missing from README.md"
    for name in (*NO_EFFECT, *REFUSED):
        assert f"  --{name}" in text
        assert f"`--{name}`" in table, f"--{name} is missing from README.md"
