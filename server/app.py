"""The app object: the one place where repository, runtime and API are wired together."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import grpc

from onnx_serving.server.api.grpc.server import build_server
from onnx_serving.server.config import ModelConfig, read_config_file, single_model
from onnx_serving.server.errors import ConfigError
from onnx_serving.server.flags import ServerOptions
from onnx_serving.server.repository.manager import ModelManager
from onnx_serving.server.runtime.model import LoadedModel, load
from onnx_serving.server.runtime.session import SessionOptions, describe_install

log = logging.getLogger(__name__)


def model_configs(options: ServerOptions) -> list[ModelConfig]:
    if options.model_config_file:
        return read_config_file(Path(options.model_config_file))
    return [single_model(options.model_name, options.model_base_path)]


class App:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.configs = model_configs(options)
        session_options = SessionOptions(
            intra_op_threads=options.intra_op_threads,
            inter_op_threads=options.inter_op_threads,
        )
        self.manager: ModelManager[LoadedModel] = ModelManager(
            functools.partial(load, options=session_options)
        )
        self._server: grpc.Server | None = None
        self._stopped = threading.Event()

    def start(self) -> None:
        """Loads the initial models, then opens the ports (as TF Serving does)."""
        log.info(describe_install())
        if self.options.file_system_poll_wait_seconds > 0:
            log.info("Model versions are read once at start-up; polling is not supported yet")
        self.manager.load(self.configs)
        server = build_server(
            self.manager,
            max_threads=self.options.grpc_threads,
            channel_arguments=self.options.grpc_channel_arguments,
            tensor_content=self.options.enable_serialization_as_tensor_content,
        )
        addresses = []
        if self.options.port:
            addresses.append(f"0.0.0.0:{self.options.port}")
        if self.options.grpc_socket_path:
            addresses.append(f"unix:{self.options.grpc_socket_path}")
        for address in addresses:
            try:
                bound = server.add_insecure_port(address)
            except RuntimeError as exc:
                raise ConfigError(f"Cannot listen on {address}: {exc}") from exc
            if not bound and not address.startswith("unix:"):
                raise ConfigError(f"Cannot listen on {address}: the port is in use or unavailable")
        server.start()
        self._server = server
        for address in addresses:
            log.info("Running gRPC ModelServer at %s ...", address)

    def wait(self) -> None:
        self._stopped.wait()

    def stop(self, grace: float = 5.0) -> None:
        """Stops taking requests and lets those in flight finish, for at most ``grace`` seconds."""
        if self._server is not None:
            self._server.stop(grace).wait()
        self._stopped.set()
