"""Runs the real server as a process on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from onnx_serving.protos.tensorflow_serving.apis import (
    predict_pb2,
    prediction_service_pb2_grpc,
)
from onnx_serving.tune.server import end, free_port

__all__ = ["ServerProcess", "free_port"]


@dataclass
class ServerProcess:
    flags: list[str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    # For a server with --ssl_config_file: how the readiness probe connects.
    credentials: grpc.ChannelCredentials | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "onnx_serving.server", "serve", f"--port={self.port}",
                *self.flags]

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """TF Serving's harness: a Predict for a missing model answers once models are loaded."""
        deadline = time.monotonic() + timeout
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "intentionally_missing_model"
        with self.channel() as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.logs()}")
                try:
                    stub.Predict(request, timeout=1)
                except grpc.RpcError as exc:
                    if "Servable" in (exc.details() or ""):
                        break
                time.sleep(0.1)
            else:
                raise TimeoutError(f"server not ready after {timeout}s:\n{self.logs()}")
        # REST opens just after gRPC: wait for it too, when there is one.
        if any(f.startswith("--rest_api_port=") and f != "--rest_api_port=0" for f in self.flags):
            while "Exporting HTTP/REST API at" not in self.logs():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"REST not ready after {timeout}s:\n{self.logs()}")
                time.sleep(0.05)

    def channel(self) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, self.credentials)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        assert self.process is not None
        returncode = end(self.process, grace=20)
        self._log.close()
        return returncode
