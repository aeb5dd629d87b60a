"""One onnx-serving process per setting, on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

from onnx_serving.client import Client, ServingError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end(process: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """Stops a server process as its orchestrator would (SIGTERM, then SIGKILL after
    ``grace`` seconds); its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class Server:
    """``onnx-serving serve`` with ``flags``; ready once ``model`` answers its status."""

    def __init__(self, flags: Sequence[str], model: str, timeout: float = 300.0) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="onnx-serving-tune-", suffix=".log", delete=False)
        self.log_path = Path(self._log.name)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "onnx_serving.server", "serve", f"--port={self.port}",
             *flags], stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait(model, timeout)
        except BaseException:
            self.stop(keep_log=True)
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    def _wait(self, model: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the server exited: {self._tail()}")
            try:
                with Client(self.address) as client:
                    if any(s.state == "AVAILABLE" for s in client.status(model, timeout=2)):
                        return
            except (grpc.RpcError, ServingError):  # not up, or not loaded yet
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{model} was not available in {timeout:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-1500:]

    def stop(self, keep_log: bool = False) -> None:
        end(self._process)
        self._log.close()
        if not keep_log:
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop(keep_log=exc is not None)
