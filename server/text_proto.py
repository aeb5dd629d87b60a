"""Protobuf text files, read as TF Serving reads its config files."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from onnx_serving.server.errors import ConfigError


def read_text_proto(path: Path, message: Message, what: str) -> None:
    """Fills ``message`` from a protobuf text file; errors name the file and the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read {what} file {path}: {exc}") from exc
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        where = f"{path}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else str(path)
        detail = str(exc).split(" : ", 1)[-1]
        raise ConfigError(
            f"Error parsing text-format {message.DESCRIPTOR.full_name} in {where}: {detail}"
        ) from exc
