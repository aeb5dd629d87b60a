"""TFRecord files: what TF Serving's warmup file and request logs are made of.

Each record is a little-endian uint64 length, the masked CRC-32C of those 8
bytes, the data, and the masked CRC-32C of the data. Checksums are verified,
so a truncated or corrupted file is an error, never a silently short read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import google_crc32c

_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    pass


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        yield from _records(stream, str(path))


def _records(stream: BinaryIO, name: str) -> Iterator[bytes]:
    index = 0
    while header := stream.read(12):
        if len(header) < 12:
            raise TFRecordError(f"{name}: record {index} is cut short in its header")
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc(header[:8]) != length_crc:
            raise TFRecordError(f"{name}: record {index} has a corrupt length")
        data = stream.read(length)
        footer = stream.read(4)
        if len(data) < length or len(footer) < 4:
            raise TFRecordError(f"{name}: record {index} is cut short")
        if masked_crc(data) != struct.unpack("<I", footer)[0]:
            raise TFRecordError(f"{name}: record {index} fails its checksum")
        yield data
        index += 1


def write_records(path: Path, records: Iterable[bytes]) -> None:
    with path.open("wb") as stream:
        for data in records:
            stream.write(frame_record(data))


def frame_record(data: bytes) -> bytes:
    """One record as written to a file: for writers that append as they go."""
    length = struct.pack("<Q", len(data))
    return b"".join((length, struct.pack("<I", masked_crc(length)), data,
                     struct.pack("<I", masked_crc(data))))
