"""The gRPC servers under test, each a child process: started, awaited, stopped.

A server that exits before its port opens is not an error of the suite: it
is how an onnx-serving without batching answers ``--enable_batching``
(``Failed to start server. Error: ...``). ``Refused`` carries that message so
the contender is skipped with it as the note, before and after batching lands.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

from bench.suite.models import REPO
from onnx_serving.tune.server import end


class Refused(Exception):
    """The server exited before serving; ``str()`` is the reason it gave."""


class ServerProcess:
    """``python -m MODULE ARGS...`` with its output in a log file, ready once its port is.

    The log is removed after a normal stop, and kept (its path in the error) otherwise."""

    def __init__(self, module: str, args: Sequence[str], port: int, *, label: str,
                 code: Path | None = None, rest_port: int | None = None) -> None:
        """``code``: a folder holding another ``onnx_serving`` to run instead of this
        checkout's (bench/versus.py), found first on the process's import path.
        ``rest_port``: the REST port ``args`` open, if any, for REST callers."""
        self.label = label
        self.address = f"127.0.0.1:{port}"
        self.rest_port = rest_port
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"bench-{label}-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)
        self._ready = False
        env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until the port answers; Refused if the process exits first."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            ready = grpc.channel_ready_future(channel)
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise Refused(self._reason())
                try:
                    ready.result(timeout=0.5)
                    self._ready = True
                    return
                except grpc.FutureTimeoutError:
                    continue
        self.stop()
        raise RuntimeError(f"{self.label} did not open {self.address} in {timeout:.0f} s; "
                           f"log: {self.log_path}")

    def _reason(self) -> str:
        text = self.log_path.read_text(errors="replace")
        for line in text.splitlines():
            if "Failed to start server" in line:
                return line.strip()
        return f"exited with status {self._process.returncode}: {text.strip()[-500:]}"

    def stop(self) -> None:
        end(self._process)
        self._log.close()
        if self._ready:  # served and stopped: nothing in the log to look at
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
