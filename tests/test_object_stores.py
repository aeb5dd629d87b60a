"""Model repositories in object stores, against real S3 and GCS servers on loopback.

moto's standalone server (as s3fs's own tests use) plays S3 and gcp-storage-emulator
plays GCS; each is started per test on a free port. The server under test reads them
through TF Serving's environment variables (S3_ENDPOINT, S3_USE_HTTPS, AWS_*;
STORAGE_EMULATOR_HOST), serves a version that appears in the bucket while clients run
with no failed request, and keeps serving, with the reason in GetModelStatus, when the
store is unreachable or its objects are gone.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from onnx_serving.client import Client
from tests.models import add_constant
from tests.server_process import ServerProcess, free_port
from tests.test_lifecycle import Traffic, wait_for


def _missing(*modules: str) -> str | None:
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"needs {', '.join(absent)}: pip install -e '.[test]'" if absent else None


class Emulator:
    """A store's emulator as a process on a free loopback port."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.port = free_port()
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *[part.format(port=self.port) for part in command]],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                assert self.process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "emulator did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._log.close()


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Emulator, Any]]:
    if reason := _missing("moto", "flask", "s3fs"):
        pytest.skip(reason)
    emulator = Emulator(["-m", "moto.server", "-H", "127.0.0.1", "-p", "{port}"],
                        tmp_path / "moto.log")
    # TF Serving's S3 settings, read by the server under test (it inherits them).
    for name, value in {"S3_ENDPOINT": f"127.0.0.1:{emulator.port}", "S3_USE_HTTPS": "0",
                        "S3_VERIFY_SSL": "0", "AWS_REGION": "us-east-1",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{emulator.port}",
                           skip_instance_cache=True, use_listings_cache=False)
    fs.mkdir("models")
    yield emulator, fs
    if emulator.process.poll() is None:
        emulator.stop()


@pytest.fixture
def gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if reason := _missing("gcp_storage_emulator", "gcsfs"):
        pytest.skip(reason)
    emulator = Emulator(["-m", "gcp_storage_emulator", "start", "--host=127.0.0.1",
                         "--port={port}", "--in-memory"], tmp_path / "gcs.log")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{emulator.port}")
    from gcsfs.core import GCSFileSystem  # as the server's storage.py, for the same reason

    fs = GCSFileSystem(token="anon", skip_instance_cache=True, use_listings_cache=False)
    fs.mkdir("models")
    yield fs
    emulator.stop()


def put_version(fs: Any, base: str, version: int) -> None:
    fs.pipe(f"{base}/{version}/model.onnx", add_constant(version).SerializeToString())


def serve(tmp_path: Path, *flags: str) -> ServerProcess:
    return ServerProcess(
        ["--file_system_poll_wait_seconds=1", "--model_config_file_poll_wait_seconds=1",
         f"--object_store_cache_dir={tmp_path / 'cache'}", *flags],
        tmp_path / "server.log",
    ).start()


def test_s3_new_version_under_traffic_then_unreachable(s3, tmp_path: Path) -> None:
    emulator, fs = s3
    put_version(fs, "models/live", 1)
    fs.pipe("models/live/2/warmup.txt", b"a version with no model.onnx is not complete")
    server = serve(tmp_path, "--model_name=live", "--model_base_path=s3://models/live")
    try:
        with Traffic(server.address) as traffic, Client(server.address) as client:
            wait_for(lambda: traffic.count() > 10)
            assert [s.version for s in client.status("live")] == [1]
            put_version(fs, "models/live", 2)
            wait_for(lambda: traffic.latest() == 2)
            emulator.stop()  # the store is unreachable: what serves stays
            wait_for(lambda: "Cannot list base path s3://models/live" in
                     client.status("live")[0].error_message, timeout=60)
            status = {s.version: s for s in client.status("live")}[2]
            assert status.state == "AVAILABLE"
            assert status.error_code == grpc.StatusCode.UNAVAILABLE
            assert "keeping the versions loaded" in status.error_message
            count = traffic.count()
            wait_for(lambda: traffic.count() > count + 20)
        assert traffic.errors == []
        assert "Copied s3://models/live/2" in server.logs()
        assert "Unloaded servable version {name: live version: 2}" not in server.logs()
    finally:
        server.stop()


def test_s3_denied_credentials_keep_what_serves(s3, tmp_path: Path) -> None:
    """The server's credentials stop being accepted (a revoked key): moto's auth is turned
    on through its own API, so the key it was given is unknown from then on."""
    emulator, fs = s3
    put_version(fs, "models/live", 1)
    server = serve(tmp_path, "--model_name=live", "--model_base_path=s3://models/live")
    try:
        with Traffic(server.address) as traffic, Client(server.address) as client:
            wait_for(lambda: traffic.count() > 10)
            urllib.request.urlopen(urllib.request.Request(  # every request checked from now
                f"http://127.0.0.1:{emulator.port}/moto-api/reset-auth", data=b"0",
                headers={"Content-Type": "text/plain"}), timeout=10).close()
            wait_for(lambda: "Cannot list base path s3://models/live" in
                     client.status("live")[0].error_message, timeout=60)
            [status] = client.status("live")
            count = traffic.count()
            wait_for(lambda: traffic.count() > count + 20)
        assert traffic.errors == []
    finally:
        server.stop()
    assert (status.version, status.state) == (1, "AVAILABLE")
    assert status.error_code == grpc.StatusCode.PERMISSION_DENIED
    assert "The AWS Access Key Id you provided does not exist" in status.error_message
    assert "keeping the versions loaded" in status.error_message
    assert "Unloaded servable version" not in server.logs()


CONFIG = """model_config_list { config {
  name: "live" base_path: "live" model_platform: "onnx"
  logging_config {
    log_collector_config { type: "" filename_prefix: "gs://models/logs/live" }
    sampling_config { sampling_rate: 1.0 }
  }
} }"""


def test_gcs_config_file_new_version_request_log_and_objects_gone(gcs, tmp_path: Path) -> None:
    """The config file is in the bucket too, with a base path relative to it; requests are
    logged to the bucket; and a base path whose objects are all gone keeps serving (an
    empty prefix cannot be told from a missing one)."""
    fs = gcs
    put_version(fs, "models/live", 1)
    fs.pipe("models/models.config", CONFIG.encode())
    server = serve(tmp_path, "--model_config_file=gs://models/models.config")
    try:
        with Traffic(server.address) as traffic, Client(server.address) as client:
            wait_for(lambda: traffic.count() > 10)
            put_version(fs, "models/live", 2)
            wait_for(lambda: traffic.latest() == 2)
            fs.rm("models/live", recursive=True)
            wait_for(lambda: "no object under gs://models/live" in
                     client.status("live")[0].error_message)
            status = {s.version: s for s in client.status("live")}[2]
            assert (status.state, status.error_code) == ("AVAILABLE", grpc.StatusCode.NOT_FOUND)
            count = traffic.count()
            wait_for(lambda: traffic.count() > count + 20)
        assert traffic.errors == []
    finally:
        server.stop()
    logs = fs.find("models/logs")
    assert logs and all(name.startswith("models/logs/live-") and name.endswith(".tfrecord")
                        for name in logs), logs


@pytest.mark.parametrize("base", ["hdfs://cluster/models/x", "az://container/models/x"])
def test_an_unsupported_scheme_is_refused_by_name(tmp_path: Path, base: str) -> None:
    """Not read as the relative path ./hdfs:/cluster/...: the server refuses to start."""
    server = ServerProcess(["--model_name=x", f"--model_base_path={base}"],
                           tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="exited early"):
        server.start()
    server.stop()
    scheme = base.split(":")[0]
    assert f"{base}: the {scheme}:// scheme is not supported" in server.logs()


@pytest.mark.parametrize(("base", "package"), [("s3://models/x", "s3fs"),
                                               ("gs://models/x", "gcsfs")])
def test_a_store_whose_package_cannot_be_imported_is_refused_with_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str, package: str
) -> None:
    """The extra not installed, or installed and broken (here: a package that fails to
    import, first on the server's PYTHONPATH): refused at start-up, saying what to install."""
    stub = tmp_path / "broken" / package
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f"raise ImportError({f'No module named {package!r}'!r})\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(stub.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    server = ServerProcess(["--model_name=x", f"--model_base_path={base}"],
                           tmp_path / "server.log")
    with pytest.raises(RuntimeError, match="exited early"):
        server.start()
    server.stop()
    assert (f"{base}: reading {base[:2]}:// needs the {package} package "
            f"(No module named {package!r}): pip install 'onnx-serving[object-stores]'"
            in server.logs())
