"""What should be served: model configs from flags or a ModelServerConfig file.

Config files are protobuf text format, exactly as tensorflow_model_server
reads them. Checks follow TF Serving's (unique names, a base path each, no
custom_model_config); its platform "tensorflow" is accepted beside "onnx" so
an existing file works unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from onnx_serving.protos.tensorflow_serving.config import model_server_config_pb2
from onnx_serving.protos.tensorflow_serving.config.file_system_storage_path_source_pb2 import (
    FileSystemStoragePathSourceConfig,
)
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.repository.policy import All, Latest, Specific, VersionPolicy
from onnx_serving.server.repository.storage import Location, ObjectUrl, location, read_text

PLATFORMS = ("", "onnx", "tensorflow")
ServableVersionPolicy = FileSystemStoragePathSourceConfig.ServableVersionPolicy


# logging_config's log_collector_config.type values that select our TFRecord collector.
REQUEST_LOG_TYPES = ("", "tfrecord")


@dataclass(frozen=True)
class RequestLogConfig:
    """A model's ``logging_config``: sampled requests with their responses, as TFRecord
    PredictionLog files named from ``filename_prefix`` (server/request_log/)."""

    filename_prefix: Location
    sampling_rate: float


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Location  # a local folder, or one in an object store
    policy: VersionPolicy = field(default_factory=Latest)
    labels: Mapping[str, int] = field(default_factory=dict)
    request_log: RequestLogConfig | None = None


def single_model(name: str, base_path: str) -> ModelConfig:
    """The config ``--model_name`` and ``--model_base_path`` describe."""
    if not base_path:
        raise ConfigError("Both server_model_config_file and model_base_path are empty!")
    return ModelConfig(name=name, base_path=location(base_path).absolute())


def read_text_proto(path: Location, message: Message, what: str) -> None:
    """Fills ``message`` from a protobuf text file; errors name the file and the line."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as exc:  # gone, unreadable, or not UTF-8
        raise ConfigError(f"Cannot read {what} file {path}: {exc}") from exc
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        where = f"{path}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else str(path)
        detail = str(exc).split(" : ", 1)[-1]
        raise ConfigError(
            f"Error parsing text-format {message.DESCRIPTOR.full_name} in {where}: {detail}"
        ) from exc


def read_config_file(path: Location) -> list[ModelConfig]:
    """Parses a ModelServerConfig text file; relative base paths are taken from its folder."""
    return read_config_update(path) or []


def read_config_update(path: Location) -> list[ModelConfig] | None:
    """As ``read_config_file``, but None for a file that sets no config at all (empty, or
    only comments): TF Serving's ServerCore::ReloadConfig takes no action for it, so a
    writer that truncates the file before it rewrites it unloads nothing. An explicit
    empty ``model_config_list {}`` is a config, and serves nothing."""
    message = model_server_config_pb2.ModelServerConfig()
    read_text_proto(path, message, "model config")
    if message.WhichOneof("config") is None:
        return None
    return from_proto(message, relative_to=path.parent.absolute())


def from_proto(
    message: model_server_config_pb2.ModelServerConfig, relative_to: Location | None = None
) -> list[ModelConfig]:
    kind = message.WhichOneof("config")
    if kind == "custom_model_config":
        raise ConfigError("ModelServerConfig.custom_model_config is not supported")
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for entry in message.model_config_list.config:
        if not entry.name:
            raise ConfigError("A model config has no name")
        if entry.name in seen:
            raise ConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
        if entry.model_platform not in PLATFORMS:
            raise ConfigError(
                f"Model {entry.name} has model_platform '{entry.model_platform}'; "
                "onnx-serving serves 'onnx' (or 'tensorflow' configs converted to ONNX)"
            )
        models.append(
            ModelConfig(
                name=entry.name,
                base_path=_base_path(entry.name, entry.base_path, relative_to),
                policy=_policy(entry.model_version_policy),
                labels=dict(entry.version_labels),
                request_log=_request_log(entry, relative_to),
            )
        )
    return models


def _request_log(
    entry: model_server_config_pb2.ModelConfig, relative_to: Location | None
) -> RequestLogConfig | None:
    if not entry.HasField("logging_config"):
        return None
    config = entry.logging_config
    collector = config.log_collector_config
    if config.HasField("custom_logging_config"):
        raise ConfigError(f"Model {entry.name}: logging_config.custom_logging_config is not "
                          "supported")
    if collector.type not in REQUEST_LOG_TYPES:
        raise ConfigError(
            f"Model {entry.name}: log collector type '{collector.type}' is not available; "
            f"onnx-serving writes TFRecord files (type {' or '.join(map(repr, REQUEST_LOG_TYPES))})"
        )
    if not collector.filename_prefix:
        raise ConfigError(f"Model {entry.name}: logging_config needs "
                          "log_collector_config.filename_prefix")
    rate = config.sampling_config.sampling_rate
    if not 0 <= rate <= 1:
        raise ConfigError(f"Model {entry.name}: sampling_rate {rate} is not between 0 and 1")
    prefix = location(collector.filename_prefix)
    if isinstance(prefix, Path) and not prefix.is_absolute() and relative_to is not None:
        prefix = relative_to / prefix
    return RequestLogConfig(prefix, rate)


def to_text(configs: list[ModelConfig]) -> str:
    """The ModelServerConfig text that ``read_config_file`` reads back as ``configs``."""
    message = model_server_config_pb2.ModelServerConfig()
    entries = message.model_config_list
    entries.SetInParent()
    for config in configs:
        entry = entries.config.add(
            name=config.name, base_path=str(config.base_path.absolute()), model_platform="onnx"
        )
        policy = config.policy
        if isinstance(policy, All):
            entry.model_version_policy.all.SetInParent()
        elif isinstance(policy, Specific):
            entry.model_version_policy.specific.versions.extend(sorted(policy.versions))
        else:
            entry.model_version_policy.latest.num_versions = policy.num_versions
        entry.version_labels.update(config.labels)
    return text_format.MessageToString(message)


def _base_path(name: str, raw: str, relative_to: Location | None) -> Location:
    if not raw:
        raise ConfigError(f"Model {name} has no base_path")
    if "\0" in raw:  # no file system takes it; refused here, not failed on later
        raise ConfigError(f"Model {name} has a NUL character in its base_path")
    path = location(raw)
    if isinstance(path, ObjectUrl) or path.is_absolute():
        return path
    if relative_to is None:
        raise ConfigError(
            f"Expected model {name} to have an absolute path or URI; got base_path()={raw}"
        )
    return relative_to / path


def _policy(message: ServableVersionPolicy) -> VersionPolicy:
    choice = message.WhichOneof("policy_choice")
    if choice == "all":
        return All()
    if choice == "specific":
        if not message.specific.versions:
            raise ConfigError("A specific version policy must list at least one version")
        return Specific(frozenset(message.specific.versions))
    return Latest(message.latest.num_versions or 1)
