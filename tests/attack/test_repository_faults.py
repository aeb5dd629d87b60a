"""Attacks on the model repository, with clients on every model throughout.

The base path renamed away and back, replaced by a file, made unreadable, or
listed while the server is out of file descriptors; corrupt, truncated and
empty versions; a polled config truncated before it is rewritten; and a storm
of reloads. Each case must fail no request, unload nothing that serves, and
say what is wrong where an operator looks (GetModelStatus, the log).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from onnx_serving.client import Client
from onnx_serving.server.errors import BasePathUnavailable
from onnx_serving.server.repository.source import scan_versions
from tests.models import add_constant
from tests.server_process import ServerProcess
from tests.test_lifecycle import (
    HALF_PLUS_TWO,
    OTHER_STREAM,
    Stream,
    Traffic,
    config_text,
    model_entry,
    publish,
    reload,
    specific,
    start_server,
    states,
    wait_for,
)


@dataclass
class Repository:
    server: ServerProcess
    base: Path
    config: Path
    text: str  # the config in force


def serve(tmp_path: Path, *, max_open_files: int | None = None) -> Repository:
    """``live`` (version 1) and ``other`` (a copy of half_plus_two), both polled every
    second, the config file too."""
    base = tmp_path / "live"
    publish(base, 1)
    other = tmp_path / "other"
    shutil.copytree(HALF_PLUS_TWO, other)
    config = tmp_path / "models.config"
    text = config_text(base, extra=model_entry("other", other))
    config.write_text(text)
    if max_open_files is None:
        return Repository(start_server(tmp_path, config), base, config, text)
    server = ServerProcess([f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"],
                           tmp_path / "server.log")
    command = server.command
    server.command = lambda: ["prlimit", f"--nofile={max_open_files}", *command()]  # type: ignore[method-assign]
    return Repository(server.start(), base, config, text)


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[Repository]:
    served = serve(tmp_path)
    yield served
    served.server.stop()


def _live_error(client: Client) -> str:
    return client.status("live")[0].error_message


def test_base_path_faults_keep_what_serves(repository: Repository) -> None:
    """Renamed away, replaced by a file, made unreadable (not as root, which reads anyway):
    the version serves throughout, GetModelStatus says why, and all is as before after."""
    base, server = repository.base, repository.server
    away = base.with_name("live.away")
    with Traffic(server.address, Stream(), OTHER_STREAM) as traffic, \
            Client(server.address) as client:
        wait_for(lambda: traffic.count() > 10)
        os.rename(base, away)
        wait_for(lambda: "No such file or directory" in _live_error(client))
        base.write_text("not a directory")
        wait_for(lambda: "Not a directory" in _live_error(client))
        assert client.status("live")[0].error_code == grpc.StatusCode.NOT_FOUND
        base.unlink()
        os.rename(away, base)
        wait_for(lambda: _live_error(client) == "")
        if os.geteuid() != 0:
            base.chmod(0)
            wait_for(lambda: "Permission denied" in _live_error(client))
            assert client.status("live")[0].error_code == grpc.StatusCode.PERMISSION_DENIED
            base.chmod(0o755)
            wait_for(lambda: _live_error(client) == "")
        _still_serving(traffic, client)
    assert traffic.errors == []
    assert "Unloaded servable version" not in server.logs()


def test_out_of_file_descriptors_unloads_nothing(tmp_path: Path) -> None:
    """Idle connections that exhaust the server's file descriptors make its base path scans
    fail with EMFILE: nothing is unloaded (the attack run lost both models this way)."""
    repository = serve(tmp_path, max_open_files=200)
    server = repository.server
    idle: list[socket.socket] = []
    try:
        with Traffic(server.address, Stream(), OTHER_STREAM, threads=1) as traffic, \
                Client(server.address) as client:
            wait_for(lambda: traffic.count() > 10)
            for _ in range(250):  # each held open by the server until its handshake times out
                idle.append(socket.create_connection(("127.0.0.1", server.port)))
            wait_for(lambda: "Too many open files" in _live_error(client))
            assert client.status("live")[0].error_code == grpc.StatusCode.RESOURCE_EXHAUSTED
            for connection in idle:
                connection.close()
            idle.clear()
            wait_for(lambda: _live_error(client) == "")
            _still_serving(traffic, client)
        assert traffic.errors == []
        assert "Unloaded servable version" not in server.logs()
    finally:
        for connection in idle:
            connection.close()
        server.stop()


def test_corrupt_truncated_and_empty_versions_never_displace_one_that_serves(
    repository: Repository,
) -> None:
    base, server = repository.base, repository.server
    with Traffic(server.address, Stream(), OTHER_STREAM) as traffic, \
            Client(server.address) as client:
        publish(base, 2, b"garbage")
        wait_for(lambda: client.status("live", version=2)[0].state == "END")
        assert client.status("live", version=2)[0].error_code == grpc.StatusCode.DATA_LOSS
        truncated = base / "3"  # written in place, and never finished
        truncated.mkdir()
        model = add_constant(3).SerializeToString()
        (truncated / "model.onnx").write_bytes(model[: len(model) // 2])
        wait_for(lambda: client.status("live", version=3)[0].state == "END")
        (base / "4").mkdir()  # empty: never settles, never loads
        (base / "5").write_text("a file, not a directory")
        count = traffic.count()
        wait_for(lambda: traffic.count() > count + 20)
        assert states(client) == {1: "AVAILABLE", 2: "END", 3: "END"}
        assert {v for seen in traffic.seen[traffic.streams[0]] for v in seen} == {1}
    assert traffic.errors == []


def test_a_truncated_config_file_then_rewritten_changes_nothing(repository: Repository) -> None:
    """A writer that truncates the polled config before it writes it again."""
    server, config = repository.server, repository.config
    with Traffic(server.address, Stream(), OTHER_STREAM) as traffic:
        for _ in range(3):
            config.write_text("")
            seen = server.logs().count("Taking no action")
            wait_for(lambda n=seen: server.logs().count("Taking no action") > n)
            config.write_text(repository.text)
            seen = server.logs().count("changed; reloading")
            wait_for(lambda n=seen: server.logs().count("changed; reloading") > n)
        count = traffic.count(OTHER_STREAM)
        wait_for(lambda: traffic.count(OTHER_STREAM) > count + 10)
    assert traffic.errors == []
    assert "Unloaded servable version" not in server.logs()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_reload_storm(repository: Repository) -> None:
    """50 reloads, each a one-edit canary move ({1, 2} canary 2 <-> {1, 3} canary 3, so each
    loads a version and unloads one), with clients on every model and label: none fails,
    and the server's memory does not grow with the reloads (a loose bound)."""
    server, base = repository.server, repository.base
    other = model_entry("other", base.with_name("other"))
    publish(base, 2)
    publish(base, 3)
    streams = (Stream(), Stream(label="canary"), Stream(label="stable"), OTHER_STREAM)
    assert server.process is not None

    def move(canary: int) -> None:
        reload(server.address, config_text(base, policy=specific(1, canary),
                                           labels={"stable": 1, "canary": canary}, extra=other))

    move(3)
    rss: list[int] = []
    with Traffic(server.address, *streams, threads=1) as traffic:
        for i in range(50):
            move(2 + i % 2)
            rss.append(_rss_kb(server.process.pid))
        assert all(traffic.count(s) > 50 for s in streams)
    assert traffic.errors == []
    early, last = max(rss[5:10]), rss[-1]
    assert last < early * 1.5 + 64 * 1024, rss


def _still_serving(traffic: Traffic, client: Client) -> None:
    """Requests keep being answered, and the version that served still does."""
    count = traffic.count()
    wait_for(lambda: traffic.count() > count + 10)
    assert states(client) == {1: "AVAILABLE"}


def test_a_scan_racing_renames_never_reads_as_fewer_versions(tmp_path: Path) -> None:
    """The base path renamed away and back while it is scanned: every scan lists each
    version or says it could not, never a part or none of them, which would unload what
    serves (the attack above once lost its model this way on a loaded machine). A
    dangling symlink named like a version is still no version."""
    base, away = tmp_path / "m", tmp_path / "m.away"
    for version in range(1, 51):
        (base / str(version)).mkdir(parents=True)
        (base / str(version) / "model.onnx").write_bytes(b"x")
    (base / "51").symlink_to(tmp_path / "nowhere")
    stop = threading.Event()

    def rename_back_and_forth() -> None:
        while not stop.is_set():
            os.rename(base, away)
            time.sleep(0.0005)
            os.rename(away, base)
            time.sleep(0.003)

    renamer = threading.Thread(target=rename_back_and_forth)
    renamer.start()
    answered = unanswered = 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                found = scan_versions("m", base)
            except BasePathUnavailable:
                unanswered += 1
                continue
            assert sorted(found) == list(range(1, 51))
            answered += 1
    finally:
        stop.set()
        renamer.join()
    assert answered and unanswered  # both outcomes came up: the race was run
