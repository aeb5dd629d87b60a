"""The models.config that ``convert --model_config_file`` writes, without surprising a server.

A server polls its config file (--model_config_file_poll_wait_seconds), so a write to it
rolls out whatever it says. ``convert`` therefore writes ``<output_dir>/models.config``
only where none exists yet, or when asked (``--update_config``); otherwise the config it
suggests goes beside it, to ``models.config.suggested``, for the operator to compare and
move in. Writes are atomic (a temporary file in the same directory, fsync, rename): a
poller reads the old file or the new one, never half of one. An update keeps the rest of
the served file: models the run did not convert, and fields the TF Serving config leaves
unset (a ``logging_config`` added by hand, say).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from google.protobuf import text_format

from onnx_serving.protos.tensorflow_serving.config import model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
SUGGESTED_SUFFIX = ".suggested"


def write_config(
    path: Path, converted: ModelServerConfig, failed: Collection[str], *, update: bool
) -> str:
    """Writes ``converted`` (the models this run converted, as onnx-serving serves them)
    into the config at ``path`` as described above; returns what was done, for the log.
    Models in ``failed`` (some version did not convert) keep their served entry, or are
    left out."""
    served = ModelServerConfig()
    unreadable = ""
    if path.exists():
        try:
            text_format.Parse(path.read_text(), served)
        except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
            unreadable = f"cannot read {path} ({exc}): "
    config = _merged(served, converted, failed)
    if not path.exists():
        write_atomically(path, text_format.MessageToString(config))
        return f"wrote {path}"
    if config == served and not unreadable:
        return f"{path} already serves the converted models as they are"
    if update and not unreadable:
        write_atomically(path, text_format.MessageToString(config))
        return f"updated {path} (--update_config)"
    suggested = path.with_name(path.name + SUGGESTED_SUFFIX)
    write_atomically(suggested, text_format.MessageToString(config))
    return (f"{unreadable}left {path} as it is, since a server may be polling it; the config "
            f"with this run's models is {suggested}"
            + ("" if unreadable else f" (--update_config writes it into {path})"))


def _merged(
    served: ModelServerConfig, converted: ModelServerConfig, failed: Collection[str]
) -> ModelServerConfig:
    """``served`` with each converted model's entry added or updated: the fields the
    converted entry sets replace the served entry's; the rest of ``served`` stays."""
    config = ModelServerConfig()
    config.CopyFrom(served)
    entries = {entry.name: entry for entry in config.model_config_list.config}
    for model in converted.model_config_list.config:
        if model.name in failed:
            continue
        entry = entries.get(model.name)
        if entry is None:
            config.model_config_list.config.add().CopyFrom(model)
            continue
        for field, _ in model.ListFields():
            entry.ClearField(field.name)
        entry.MergeFrom(model)
    return config


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, whole, even across a crash: a temporary
    file in the same directory (same filesystem), fsynced, renamed over ``path``, and the
    directory fsynced. An existing file's permissions carry over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

