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
import resource
from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any

from onnx_serving.server.errors import ConfigError

log = logging.getLogger(__name__)


def _default_threads() -> int:
    return 4 * (os.cpu_count() or 1)


def flag(default: Any, description: str, *, own: bool = False) -> Any:
    """A flag's default and its --help line; ``own``: onnx-serving's, not TF Serving's."""
    return field(default=default, metadata={"description": description, "own": own})


@dataclass(frozen=True)
class ServerOptions:
    port: int = flag(8500, "gRPC port; 0: no TCP port (then --grpc_socket_path is needed)")
    grpc_socket_path: str = flag("", "also serve gRPC on this UNIX socket")
    model_name: str = flag("default", "the model's name, without --model_config_file")
    model_base_path: str = flag(
        "", "the model's folder of numbered versions (or gs://, s3://), without "
        "--model_config_file"
    )
    model_config_file: str = flag(
        "", "ModelServerConfig text file (or gs://, s3://): models, version policies and labels"
    )
    grpc_max_threads: int = flag(0, "threads answering unary gRPC calls; 0: four per CPU")
    grpc_channel_arguments: str = flag(
        "", "gRPC channel arguments as k=v,k=v (keepalive, max connection age, ...)"
    )
    enable_serialization_as_tensor_content: bool = flag(
        False, "Predict answers with tensor_content rather than the typed fields"
    )
    tensorflow_session_parallelism: int = flag(
        0, "ONNX Runtime's intra- and inter-op threads unless set apart; 0: its choice"
    )
    tensorflow_intra_op_parallelism: int = flag(0, "ONNX Runtime's intra-op threads; 0: auto")
    tensorflow_inter_op_parallelism: int = flag(0, "ONNX Runtime's inter-op threads; 0: auto")
    file_system_poll_wait_seconds: int = flag(
        1, "seconds between scans for new versions; 0 or less: scan once at start-up"
    )
    model_config_file_poll_wait_seconds: int = flag(
        0, "seconds between re-reads of --model_config_file; 0: read once"
    )
    max_num_load_retries: int = flag(5, "retries of a version that fails to load")
    load_retry_interval_micros: int = flag(60_000_000, "microseconds between load retries")
    num_load_threads: int = flag(0, "versions loaded at once; 0: one")
    num_unload_threads: int = flag(0, "versions unloaded at once; 0: one")
    allow_version_labels_for_unavailable_models: bool = flag(
        False, "a label may name a version that is not yet available"
    )
    enable_model_warmup: bool = flag(
        True, "replay assets.extra/tf_serving_warmup_requests before a version serves"
    )
    num_request_iterations_for_warmup: int = flag(
        0, "times each warmup record is replayed; 0: once"
    )
    enable_signature_method_name_check: bool = flag(
        False, "Classify and Regress check the signature's method_name"
    )
    enable_synthetic_warmup: bool = flag(
        False, "warm up with random inputs a version that has no warmup records", own=True
    )
    synthetic_warmup_dim: int = flag(
        1, "size given to the unknown dimensions of synthetic warmup inputs", own=True
    )
    version_transition_policy: str = flag(
        "availability_preserving",
        "availability_preserving (load the new version, then unload the old) or "
        "resource_preserving (unload first)", own=True,
    )
    enable_access_log: bool = flag(
        False, "one log line per Predict, Classify, Regress, MultiInference and REST call, "
        "with the version that answered", own=True,
    )
    runtime_config_file: str = flag(
        "", "server-wide runtime.json defaults (providers, threads; docs/runtime.md)", own=True
    )
    num_workers: int = flag(1, "processes sharing the ports (server/workers.py)", own=True)
    reuse_port: bool = flag(
        False, "share the ports with SO_REUSEPORT (set by --num_workers for each worker)",
        own=True,
    )
    shutdown_delay_seconds: int = flag(
        0, "at SIGTERM, seconds of answering on while health says NOT_SERVING", own=True
    )
    grpc_max_streams: int = flag(
        0, "streaming gRPC calls (health Watch, reflection) open at once, on threads of "
        "their own so they never starve unary calls; more answer RESOURCE_EXHAUSTED; "
        "0: as many as --grpc_max_threads", own=True,
    )
    inline_call_cpu_us: int = flag(
        500, "a model's calls costing at most this much CPU (µs, a moving mean by request "
        "size to a power of two) are answered on the thread that receives them (gRPC's "
        "unary poller, REST's event loop), with no hand-off to a worker; never under "
        "--enable_batching or for shadowed gRPC calls; 0: never (server/api/call_costs.py)",
        own=True,
    )
    rest_api_port: int = flag(0, "REST API port; 0: no REST API")
    rest_api_num_threads: int = flag(0, "threads answering REST requests; 0: four per CPU")
    rest_api_timeout_in_ms: int = flag(
        30000, "milliseconds a REST request may take once read; 0 or less: no limit"
    )
    rest_api_max_gzip_bytes: int = flag(
        100 << 20, "largest size a gzip REST body may inflate to (TF Serving's 100 MiB); "
        "larger answer 413", own=True,
    )
    rest_api_max_header_bytes: int = flag(
        64 << 10, "largest REST request line and headers; larger answer 431", own=True
    )
    rest_api_idle_timeout_in_ms: int = flag(
        75_000, "milliseconds a REST connection may wait for its next request", own=True
    )
    rest_api_read_timeout_in_ms: int = flag(
        60_000, "milliseconds a REST request's headers and body may take to arrive; "
        "later answer 408", own=True,
    )
    rest_api_max_connections: int = flag(
        0, "REST connections open at once; more answer 503 and are closed; "
        "0: half the open-file limit", own=True,
    )
    monitoring_config_file: str = flag(
        "", "MonitoringConfig text file: Prometheus metrics on the REST port"
    )
    enable_batching: bool = flag(False, "batch requests on the server")
    batching_parameters_file: str = flag("", "BatchingParameters text file")
    enable_per_model_batching_parameters: bool = flag(
        False, "a version's own batching_params.pbtxt replaces the server's"
    )
    enable_grpc_healthcheck_service: bool = flag(False, "serve grpc.health.v1.Health")
    ssl_config_file: str = flag("", "SSLConfig text file: TLS and mutual TLS for gRPC")
    rest_api_enable_cors_support: bool = flag(False, "TF's CORS headers on REST answers")
    per_process_gpu_memory_fraction: float = flag(
        0.0, "fraction of each CUDA device's memory a session may take; 0: no limit"
    )
    rest_api_enable_ssl: bool = flag(
        False, "REST (and metrics) over HTTPS with --ssl_config_file", own=True
    )
    ssl_config_file_poll_wait_seconds: int = flag(
        0, "seconds between re-reads of --ssl_config_file's certificates; 0: read once",
        own=True,
    )
    request_log_max_file_bytes: int = flag(
        64 << 20, "size at which a request log file is rotated", own=True
    )
    request_log_max_files: int = flag(
        10, "request log files kept per filename_prefix; the oldest are deleted", own=True
    )
    request_log_queue_size: int = flag(
        1024, "request log records waiting to be written; more are dropped", own=True
    )
    shadow_config_file: str = flag(
        "", "JSON file: per model, a TF Serving endpoint to shadow (docs/shadow.md)", own=True
    )
    shadow_config_file_poll_wait_seconds: int = flag(
        1, "seconds between re-reads of --shadow_config_file; 0: read once", own=True
    )
    object_store_cache_dir: str = flag(
        "", "where versions in gs:// and s3:// base paths are copied to be loaded; "
        "empty: <temp dir>/onnx-serving-object-store-<uid>", own=True,
    )
    convert_saved_models: bool = flag(
        True, "convert a version that holds a TensorFlow SavedModel (and no model.onnx) to "
        "ONNX at load, in a separate process, validated as `onnx-serving convert` does "
        "(needs the migration extra); false: refuse it, naming the convert command", own=True,
    )
    saved_model_cache_dir: str = flag(
        "", "where SavedModel versions converted at load are kept, named by content (share "
        "it between replicas and restarts); empty: <temp dir>/onnx-serving-converted-<uid>",
        own=True,
    )
    num_saved_model_conversions: int = flag(
        1, "SavedModel conversions run at once (each takes a load thread meanwhile)", own=True
    )
    saved_model_conversion_memory_mb: int = flag(
        0, "address-space limit (RLIMIT_AS) of each conversion process, in MiB; 0: none",
        own=True,
    )
    saved_model_conversion_timeout_seconds: int = flag(
        1800, "a SavedModel conversion running longer is stopped and its version fails to "
        "load (the load thread is freed); 0: no limit", own=True,
    )

    @property
    def grpc_threads(self) -> int:
        return self.grpc_max_threads or _default_threads()

    @property
    def grpc_streams(self) -> int:
        return self.grpc_max_streams or self.grpc_threads

    @property
    def inline_cpu(self) -> float:
        """Seconds of CPU a call may cost to be answered where it arrives: none to wait on
        other calls, so never under batching."""
        return 0.0 if self.enable_batching else self.inline_call_cpu_us / 1e6

    @property
    def rest_threads(self) -> int:
        return self.rest_api_num_threads or _default_threads()

    @property
    def rest_connections(self) -> int:
        """Half the open-file limit by default: the rest keeps models, logs and gRPC going."""
        if self.rest_api_max_connections:
            return self.rest_api_max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(1, (soft if soft != resource.RLIM_INFINITY else 1 << 20) // 2)

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
    "port": (lambda v: 0 <= v <= 65535, "expected a port from 0 to 65535"),
    "rest_api_port": (lambda v: 0 <= v <= 65535, "expected a port from 0 to 65535"),
    "grpc_max_threads": (lambda v: v >= 0, "expected 0 (four per CPU) or more threads"),
    "max_num_load_retries": (lambda v: v >= 0, "expected a count of 0 or more"),
    "load_retry_interval_micros": (lambda v: v >= 0, "expected 0 or more microseconds"),
    "synthetic_warmup_dim": (lambda v: v >= 1, "expected a size of 1 or more"),
    "num_workers": (lambda v: v >= 1, "expected 1 or more processes"),
    "grpc_max_streams": (lambda v: v >= 0, "expected 0 or more streams"),
    "inline_call_cpu_us": (lambda v: v >= 0, "expected 0 or more microseconds"),
    "rest_api_max_gzip_bytes": (lambda v: v >= 1, "expected 1 or more bytes"),
    "rest_api_max_header_bytes": (lambda v: v >= 1, "expected 1 or more bytes"),
    "rest_api_idle_timeout_in_ms": (lambda v: v >= 1, "expected 1 or more milliseconds"),
    "rest_api_read_timeout_in_ms": (lambda v: v >= 1, "expected 1 or more milliseconds"),
    "rest_api_max_connections": (lambda v: v >= 0, "expected 0 or more connections"),
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


def takes_value(name: str) -> bool:
    """Whether flag ``name`` written bare (``--name``, no ``=``) takes the next argument as
    its value; a boolean one is true instead."""
    return _TYPES.get(name) != "bool" and name not in _BOOLEAN_TF_FLAGS


# TF Serving's integer flags are int32 (tensorflow::Flag), but these int64; ours that count
# bytes are too. A value past its type is refused as TF's parser refuses it: a wait of
# 10**11 seconds would otherwise overflow a thread's timeout long after start-up.
_INT64_FLAGS = frozenset({
    "load_retry_interval_micros", "rest_api_max_gzip_bytes", "request_log_max_file_bytes",
})


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
        bits = 64 if name in _INT64_FLAGS else 32
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise ConfigError(
                f"Illegal value '{raw}' for flag --{name}: expected a {bits}-bit integer")
        return value
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
            if not takes_value(name):
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
    """``serve --help``: every flag with its default and what it does."""
    lines = ["Flags (tensorflow_model_server's, as --flag=value):"]
    own = [f for f in fields(ServerOptions) if f.metadata["own"]]
    for f in fields(ServerOptions):
        if f not in own:
            lines.extend(_described(f))
    lines.append("onnx-serving's own flags:")
    for f in own:
        lines.extend(_described(f))
    lines.append("TF Serving flags accepted with no effect on ONNX Runtime:")
    lines.extend(f"  --{name}\n      {why}" for name, why in NO_EFFECT.items())
    lines.append("TF Serving flags accepted only at their default:")
    lines.extend(f"  --{name}={default}\n      {why}" for name, (default, why) in REFUSED.items())
    return "\n".join(lines)


def _described(option: Field[Any]) -> list[str]:
    default = str(option.default).lower() if option.type == "bool" else option.default
    return [f"  --{option.name}={default}", f"      {option.metadata['description']}"]
