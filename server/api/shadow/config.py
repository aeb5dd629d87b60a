"""--shadow_config_file: per model, the TF Serving endpoint it shadows, and how.

A JSON side file rather than fields in the model config: TF Serving's text-proto
parser refuses unknown fields, and during a migration the same ``models.config``
must still start TF Serving (the rollback). The file is re-read every
--shadow_config_file_poll_wait_seconds; one that does not parse changes nothing.

    {"models": {"half_plus_two": {
        "mode": "shadow",                  # shadow | candidate | off
        "address": "tf-serving:8500",
        "ssl_config_file": "",             # TF's SSLConfig text, read as a client's
        "server_name": "",                 # TLS name to verify, if not the address's
        "channel_arguments": "",           # k=v,k=v as --grpc_channel_arguments
        "sampling_rate": 1.0,              # share of requests compared
        "timeout_ms": 1000,                # the compared call's deadline
        "max_in_flight": 32,               # comparisons under way; more are dropped
        "max_in_flight_bytes": 67108864,   # requests and answers they hold
        "atol": 1e-4, "rtol": 1e-3, "top_k": 0,
        "log_prefix": "",                  # disagreements as PredictionLog TFRecords
        "switch": {"after": 1000, "min_agreement": 0.999, "revert_below": 0.99}
    }}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

import grpc

from onnx_serving.protos.tensorflow_serving.config import ssl_config_pb2
from onnx_serving.server.api.grpc.server import MAX_MESSAGE_BYTES, parse_channel_arguments
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.repository.model_config import read_text_proto

Mode = Literal["shadow", "candidate", "off"]
MODES: tuple[Mode, ...] = ("shadow", "candidate", "off")


@dataclass(frozen=True)
class SwitchRule:
    """Moves ``shadow`` → ``candidate`` once the last ``after`` compared requests agree
    at least ``min_agreement`` and our p99 is no worse than the baseline's; back to
    ``shadow`` as soon as more than ``1 - revert_below`` of the last ``after`` disagree."""

    after: int = 1000
    min_agreement: float = 0.999
    revert_below: float = 0.99


@dataclass(frozen=True)
class Endpoint:
    """How the baseline is reached; equal endpoints share one channel."""

    address: str
    ssl_config_file: str = ""
    server_name: str = ""
    channel_arguments: str = ""

    def channel(self) -> grpc.Channel:
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        options += parse_channel_arguments(self.channel_arguments)
        if not self.ssl_config_file:
            return grpc.insecure_channel(self.address, options=options)
        return grpc.secure_channel(self.address, _credentials(Path(self.ssl_config_file)), options)


@dataclass(frozen=True)
class ShadowConfig:
    endpoint: Endpoint
    mode: Mode = "shadow"
    sampling_rate: float = 1.0
    timeout_ms: int = 1000
    max_in_flight: int = 32
    max_in_flight_bytes: int = 64 << 20
    atol: float = 1e-4
    rtol: float = 1e-3
    top_k: int = 0
    log_prefix: str = ""
    switch: SwitchRule | None = field(default=None)


_ENDPOINT_KEYS = {f.name for f in fields(Endpoint)}
_KEYS = {f.name for f in fields(ShadowConfig)} - {"endpoint"}


def read_shadow_config(path: Path) -> dict[str, ShadowConfig]:
    """The models shadowed, by name; a bad file raises ConfigError naming what is wrong."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read shadow config file {path}: {exc}") from exc
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict) or set(raw) - {"models"}:
        raise ConfigError(f"Shadow config file {path}: expected {{\"models\": {{name: {{...}}}}}}")
    return {name: _model(path, name, entry) for name, entry in models.items()}


def _model(path: Path, name: str, entry: Any) -> ShadowConfig:
    where = f"Shadow config file {path}, model {name}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = set(entry) - _KEYS - _ENDPOINT_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if not entry.get("address"):
        raise ConfigError(f"{where}: address (the baseline's host:port) is required")
    try:
        endpoint = Endpoint(**{k: str(v) for k, v in entry.items() if k in _ENDPOINT_KEYS})
        switch = entry.get("switch")
        config = ShadowConfig(
            endpoint,
            **{k: v for k, v in entry.items() if k in _KEYS and k != "switch"},
            switch=SwitchRule(**switch) if isinstance(switch, dict) else None,
        )
        endpoint.channel().close()  # a bad TLS file or channel argument fails here
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    _check(where, config)
    return config


def _check(where: str, c: ShadowConfig) -> None:
    problems = [
        f"mode must be one of {', '.join(MODES)}" if c.mode not in MODES else "",
        "sampling_rate must be in [0, 1]" if not 0.0 <= c.sampling_rate <= 1.0 else "",
        "timeout_ms must be 1 or more" if c.timeout_ms < 1 else "",
        "max_in_flight must be 1 or more" if c.max_in_flight < 1 else "",
        "max_in_flight_bytes must be 1 or more" if c.max_in_flight_bytes < 1 else "",
        "atol, rtol and top_k must not be negative" if min(c.atol, c.rtol, c.top_k) < 0 else "",
    ]
    if c.switch is not None and (
        c.switch.after < 1 or not 0 <= c.switch.revert_below <= c.switch.min_agreement <= 1
    ):
        problems.append("switch needs after >= 1 and 0 <= revert_below <= min_agreement <= 1")
    found = [p for p in problems if p]
    if found:
        raise ConfigError(f"{where}: {'; '.join(found)}")


def _credentials(path: Path) -> grpc.ChannelCredentials:
    """TF's SSLConfig as a client reads it: ``custom_ca`` verifies the baseline (the
    system's roots when empty); ``server_key`` and ``server_cert`` are our certificate,
    for a baseline that verifies its clients."""
    message = ssl_config_pb2.SSLConfig()
    read_text_proto(path, message, "SSL config")
    if bool(message.server_key) != bool(message.server_cert):
        raise ConfigError(f"SSL config file {path}: server_key and server_cert go together")
    return cast(grpc.ChannelCredentials, grpc.ssl_channel_credentials(
        root_certificates=message.custom_ca.encode() or None,
        private_key=message.server_key.encode() or None,
        certificate_chain=message.server_cert.encode() or None,
    ))
