"""TLS from --ssl_config_file, as TF Serving reads it, and certificate reloads.

The file is TF Serving's ``SSLConfig`` in protobuf text format with the PEM
contents inline. ``client_verify`` requires a client certificate signed by
``custom_ca``. gRPC takes the same credentials on every port (TCP and the
Unix socket); REST stays plaintext unless --rest_api_enable_ssl.

With --ssl_config_file_poll_wait_seconds the file is re-read while serving: a
changed file that is valid applies to new connections (established ones keep
their session); one that is not is logged and the old credentials stay.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from onnx_serving.protos.tensorflow_serving.config import ssl_config_pb2
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.repository.model_config import read_text_proto

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsConfig:
    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


def read_ssl_config(path: Path) -> TlsConfig:
    """Parses and checks the file: the PEM blocks are loaded once here, so a bad key or
    certificate stops start-up (or a reload) with the reason, not the first handshake."""
    message = ssl_config_pb2.SSLConfig()
    read_text_proto(path, message, "SSL config")
    config = TlsConfig(message.server_key, message.server_cert, message.custom_ca,
                       message.client_verify)
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"SSL config file {path} needs both server_key and server_cert")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(
            f"SSL config file {path} sets client_verify without custom_ca: client "
            "certificates need a CA to be verified against"
        )
    try:
        _server_context(config)
    except ssl.SSLError as exc:
        raise ConfigError(f"SSL config file {path} has an unusable key or certificate (a key "
                          f"under a passphrase cannot be used): {exc}") from exc
    return config


def _server_context(config: TlsConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The ssl module reads a key and certificate only from files: a private folder, gone
    # before this returns.
    with tempfile.TemporaryDirectory(prefix="onnx-serving-tls-") as folder:
        key, cert = Path(folder) / "key.pem", Path(folder) / "cert.pem"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(config.server_key)
        cert.write_text(config.server_cert)
        # A key under a passphrase has none to give here (SSLConfig carries none): refused,
        # where OpenSSL would otherwise ask for it on the terminal.
        context.load_cert_chain(cert, key, password=_no_passphrase)
    if config.custom_ca:
        context.load_verify_locations(cadata=config.custom_ca)
    context.verify_mode = ssl.CERT_REQUIRED if config.client_verify else ssl.CERT_NONE
    return context


def _no_passphrase() -> bytes:
    return b""


def _grpc_certificates(config: TlsConfig) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
    )


class ServerTls:
    """The credentials of one --ssl_config_file for every listener, kept current."""

    def __init__(self, path: Path, poll_seconds: int = 0) -> None:
        self._path = path
        self._poll_seconds = poll_seconds
        self._bytes = path.read_bytes() if path.exists() else b""
        self._config = read_ssl_config(path)
        self._generation = 0
        self._rest: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """New credentials for one port (each port asks for updates on its own)."""
        config = self._config
        if self._poll_seconds <= 0:
            return grpc.ssl_server_credentials(
                [(config.server_key.encode(), config.server_cert.encode())],
                root_certificates=config.custom_ca.encode() or None,
                require_client_auth=config.client_verify,
            )
        return grpc.dynamic_ssl_server_credentials(
            _grpc_certificates(config), self._fetcher(),
            require_client_authentication=config.client_verify,
        )

    def _fetcher(self) -> Callable[[], grpc.ServerCertificateConfiguration | None]:
        """gRPC calls this before each handshake: None keeps what it has."""
        seen = self._generation

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal seen
            with self._lock:
                if seen == self._generation:
                    return None
                seen = self._generation
                return _grpc_certificates(self._config)

        return fetch

    def rest_context(self) -> ssl.SSLContext:
        """The context the HTTP server listens with; after a reload it hands each new
        connection to the newest context as the handshake starts."""
        context = _server_context(self._config)
        self._rest = context
        context.sni_callback = self._to_current  # called for every client hello, SNI or not
        return context

    def _to_current(self, connection: ssl.SSLObject, _name: str | None,
                    context: ssl.SSLContext) -> None:
        current = self._rest
        if current is not None and current is not context:
            connection.context = current

    def start(self) -> None:
        if self._poll_seconds > 0:
            threading.Thread(target=self._poll, name="ssl-config-poller", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                data = self._path.read_bytes()
            except OSError as exc:
                log.error("Cannot re-read SSL config file %s: %s", self._path, exc)
                continue
            if data != self._bytes:
                self._bytes = data
                self.reload()

    def reload(self) -> None:
        """Applies the file as it is now, or logs why not and keeps the old credentials."""
        try:
            config = read_ssl_config(self._path)
        except ConfigError as exc:
            log.error("SSL config not reloaded, the previous one stays: %s", exc.message)
            return
        if config.client_verify != self._config.client_verify:
            log.error("SSL config not reloaded: client_verify can only change with a restart")
            return
        rest = _server_context(config) if self._rest is not None else None
        with self._lock:
            self._rest = rest
            self._config = config
            self._generation += 1
        log.info("Reloaded the SSL config from %s: new connections use its certificates",
                 self._path)
