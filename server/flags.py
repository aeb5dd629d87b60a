"""tensorflow_model_server's command-line flags, in its ``--flag=value`` syntax.

Every flag of tensorflow_model_server is known here. Those with an ONNX
Runtime or server meaning parse into ``ServerOptions``; those with none are
accepted with a log line saying so; those that would change answers or
security here are accepted only at their TF Serving default and otherwise
refused with a message naming the flag. None is silently ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from onnx_serving.server.errors import ConfigError

log = logging.getLogger(__name__)


def _default_threads() -> int:
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class ServerOptions:
    port: int = 8500
    grpc_socket_path: str = ""
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    grpc_max_threads: int = 0  # 0: four per CPU, as TF Serving
    grpc_channel_arguments: str = ""
    enable_serialization_as_tensor_content: bool = False
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    file_system_poll_wait_seconds: int = 1  # 0: scan once at start-up; negative: the same
    model_config_file_poll_wait_seconds: int = 0  # 0: read once
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    num_load_threads: int = 0  # 0: one
    num_unload_threads: int = 0  # 0: one
    allow_version_labels_for_unavailable_models: bool = False
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0  # 0: once
    enable_signature_method_name_check: bool = False  # Classify/Regress check method_name
    # onnx-serving's own, beyond TF Serving's.
    enable_synthetic_warmup: bool = False
    synthetic_warmup_dim: int = 1
    version_transition_policy: str = "availability_preserving"
    enable_access_log: bool = False
    runtime_config_file: str = ""  # server-wide runtime.json defaults (docs/runtime.md)
    num_workers: int = 1  # processes sharing the ports (server/workers.py)
    reuse_port: bool = False  # set for each worker: share the ports with SO_REUSEPORT
    # At SIGTERM: seconds of answering while health says NOT_SERVING (docs/kubernetes.md).
    shutdown_delay_seconds: int = 0
    rest_api_port: int = 0  # 0: no REST API, as TF Serving
    rest_api_num_threads: int = 0  # 0: four per CPU
    rest_api_timeout_in_ms: int = 30000
    monitoring_config_file: str = ""
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    enable_grpc_healthcheck_service: bool = False
    ssl_config_file: str = ""
    rest_api_enable_cors_support: bool = False
    per_process_gpu_memory_fraction: float = 0.0  # 0: no limit; else of each CUDA device
    # onnx-serving's own TLS options (server/tls.py).
    rest_api_enable_ssl: bool = False  # REST (and metrics) over HTTPS with --ssl_config_file
    ssl_config_file_poll_wait_seconds: int = 0  # 0: read once; else reload certificates
    # Request logs (a model's logging_config; server/request_log.py).
    request_log_max_file_bytes: int = 64 << 20
    request_log_max_files: int = 10  # per filename_prefix; the oldest are deleted
    request_log_queue_size: int = 1024  # records waiting to be written; more are dropped

    @property
    def grpc_threads(self) -> int:
        return self.grpc_max_threads or _default_threads()

    @property
    def rest_threads(self) -> int:
        return self.rest_api_num_threads or _default_threads()

    @property
    def intra_op_threads(self) -> int:
        return self.tensorflow_intra_op_parallelism or self.tensorflow_session_parallelism

    @property
    def inter_op_threads(self) -> int:
        return self.tensorflow_inter_op_parallelism or self.tensorflow_session_parallelism


# Values a flag may not take, and why.
_LIMITS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "version_transition_policy": (
        lambda v: v in ("availability_preserving", "resource_preserving"),
        "expected availability_preserving or resource_preserving",
    ),
    "max_num_load_retries": (lambda v: v >= 0, "expected a count of 0 or more"),
    "load_retry_interval_micros": (lambda v: v >= 0, "expected 0 or more microseconds"),
    "synthetic_warmup_dim": (lambda v: v >= 1, "expected a size of 1 or more"),
    "num_workers": (lambda v: v >= 1, "expected 1 or more processes"),
    "shutdown_delay_seconds": (lambda v: v >= 0, "expected 0 or more seconds"),
    "request_log_max_file_bytes": (lambda v: v >= 1, "expected 1 or more bytes"),
    "request_log_max_files": (lambda v: v >= 1, "expected 1 or more files"),
    "request_log_queue_size": (lambda v: v >= 1, "expected 1 or more records"),
    "per_process_gpu_memory_fraction": (
        lambda v: 0 <= v <= 1,
        "expected a fraction from 0 to 1 (TF's values above 1 ask for unified memory, which "
        "ONNX Runtime's CUDA provider does not use)",
    ),
}

# TF Serving flags with no meaning on ONNX Runtime: any value is accepted, and saying so
# takes one log line. None of them can change an answer or a guarantee.
NO_EFFECT: dict[str, str] = {
    "flush_filesystem_caches": "it flushes TensorFlow's file system caches after loads",
    "saved_model_tags": "an ONNX model has no MetaGraphs to choose from; "
                        "`onnx-serving convert --saved_model_tags` picks the one converted",
    "tensorflow_session_config_file": "it configures TensorFlow sessions; ONNX Runtime's "
                                      "session options are in runtime.json",
    "enable_profiler": "it serves TensorFlow's ProfilerService, which profiles TensorFlow",
    "thread_pool_factory_config_file": "it sets TensorFlow's per-request thread pools; "
                                       "ONNX Runtime's are set by the *_parallelism flags "
                                       "and runtime.json",
    "remove_unused_fields_from_bundle_metagraph": "it trims TensorFlow's MetaGraph in memory",
    "xla_cpu_compilation_enabled": "XLA compiles TensorFlow graphs; ONNX Runtime optimizes "
                                   "its own (runtime.json's graph_optimization_level)",
    "enable_model_warmup_in_parallel": "warmup runs inside each load; --num_load_threads "
                                       "sets how many loads run at once",
}

# TF Serving flags that would change answers or security here: refused unless at their
# TF Serving default, with why.
REFUSED: dict[str, tuple[str, str]] = {
    "platform_config_file": ("", "it configures TensorFlow's platform (session, batching); "
                                 "use --runtime_config_file and --batching_parameters_file"),
    "use_alts_credentials": ("false", "ALTS credentials are not available; use "
                                      "--ssl_config_file"),
    "prefer_tflite_model": ("false", "onnx-serving serves ONNX models, not TensorFlow Lite"),
    "use_tflite_model": ("false", "onnx-serving serves ONNX models, not TensorFlow Lite"),
    "mixed_precision": ("", "TensorFlow's automatic mixed precision would change answers; "
                            "convert the model to float16 instead"),
}

_TYPES = {f.name: f.type for f in fields(ServerOptions)}
# Taken bare as true, as tensorflow_model_server takes its boolean flags.
_BOOLEAN_TF_FLAGS = {
    "flush_filesystem_caches", "enable_profiler", "remove_unused_fields_from_bundle_metagraph",
    "xla_cpu_compilation_enabled", "enable_model_warmup_in_parallel",
    *(name for name, (default, _) in REFUSED.items() if default == "false"),
}
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def _parse_value(name: str, raw: str) -> Any:
    kind = _TYPES[name]
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"Illegal value '{raw}' for flag --{name}: expected true or false")
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(
                f"Illegal value '{raw}' for flag --{name}: expected a number"
            ) from None
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(
                f"Illegal value '{raw}' for flag --{name}: expected an integer"
            ) from None
    return raw


def _same(raw: str, default: str) -> bool:
    if raw.lower() == default:
        return True
    try:
        return float(raw) == float(default)
    except ValueError:
        value = raw.lower()
        return (value in _FALSE and default in _FALSE) or (value in _TRUE and default in _TRUE)


def parse_flags(argv: Sequence[str]) -> ServerOptions:
    values: dict[str, Any] = {}
    args = list(argv)
    while args:
        token = args.pop(0)
        if not token.startswith("-") or token in ("-", "--"):
            raise ConfigError(f"Unexpected argument '{token}': flags take the form --flag=value")
        name, has_value, raw = token.lstrip("-").partition("=")
        known = name in _TYPES or name in NO_EFFECT or name in REFUSED
        if not known:
            raise ConfigError(f"Unknown command line flag '{name}'")
        if not has_value:
            if _TYPES.get(name) == "bool" or name in _BOOLEAN_TF_FLAGS:
                raw = "true"
            elif args:
                raw = args.pop(0)
            else:
                raise ConfigError(f"Flag --{name} needs a value")
        if name in NO_EFFECT:
            log.info("Flag --%s=%s has no effect on onnx-serving: %s", name, raw, NO_EFFECT[name])
            continue
        if name in REFUSED:
            default, why = REFUSED[name]
            if not _same(raw, default):
                raise ConfigError(
                    f"Flag --{name}={raw} is not supported: {why}. Remove it or leave it "
                    f"at TF Serving's default ({default or 'empty'})"
                )
            continue
        value = _parse_value(name, raw)
        limit = _LIMITS.get(name)
        if limit is not None and not limit[0](value):
            raise ConfigError(f"Flag --{name}={raw} is not supported: {limit[1]}")
        values[name] = value
    options = ServerOptions(**values)
    if not options.port and not options.grpc_socket_path:
        raise ConfigError("Server must listen on at least one of --port or --grpc_socket_path")
    if options.batching_parameters_file and not options.enable_batching:
        raise ConfigError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if options.rest_api_enable_ssl and not options.ssl_config_file:
        raise ConfigError("--rest_api_enable_ssl serves the credentials of --ssl_config_file: "
                          "set it too")
    if options.rest_api_port and options.rest_api_port == options.port:
        raise ConfigError("--port and --rest_api_port must differ")
    return options


def usage() -> str:
    lines = ["Flags (tensorflow_model_server's, as --flag=value):"]
    for f in fields(ServerOptions):
        lines.append(f"  --{f.name}={str(f.default).lower() if f.type == 'bool' else f.default}")
    lines.append("TF Serving flags accepted with no effect on ONNX Runtime:")
    lines.extend(f"  --{name}" for name in NO_EFFECT)
    lines.append("TF Serving flags accepted only at their default:")
    lines.extend(f"  --{name}={default}" for name, (default, _) in REFUSED.items())
    return "\n".join(lines)
