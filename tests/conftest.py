from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.models import build_repository
from tests.server_process import ServerProcess


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model repository; returns its model config file."""
    return build_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="session")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server over the whole test repository, shared by the API tests."""
    log = tmp_path_factory.mktemp("logs") / "server.log"
    flags = [
        f"--model_config_file={repository}",
        # TF Serving would refuse to start on the label to missing version 9 without it.
        "--allow_version_labels_for_unavailable_models",
        # The broken model ends at once rather than retrying (test_lifecycle covers retries).
        "--max_num_load_retries=0",
    ]
    process = ServerProcess(flags, log).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        yield channel


@pytest.fixture(scope="session")
def converted_half_plus_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TF Serving's half_plus_two test model (its TF1 export: Predict over the parsed ``x``,
    Regress and Classify over serialized tf.Example) converted by ``onnx-serving convert``:
    the ONNX model's base path, holding version 123."""
    from tests.saved_models import converted_half_plus_two

    return converted_half_plus_two(tmp_path_factory.mktemp("half_plus_two"))
