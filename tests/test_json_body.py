"""orjson's reading of request bodies, taken only where it equals the standard library's."""

from __future__ import annotations

import gc
import json
import random
import struct
import threading
from collections.abc import Iterator

import pytest

from onnx_serving.codec.json_body import LARGE_BODY, CollectorPaused, fast_object


def _as_json_reads(body: bytes) -> str:
    """repr keeps what == hides: 1 against 1.0, -0.0 against 0.0."""
    return repr(json.loads(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [1, 2.5, -0, -0.0, 1E5, 0.1e-400, 2.2250738585072011e-308]}',
        b'{"x": 999999999999999999, "y": -999999999999999999}',
        b'{"a": 1, "a": 2}',
        b' \n{"text": "\\u00e9t\\u00e9 \\"q\\"", "nested": {"b64": "AAAA"}}\t',
        b'{"big": 1.7976931348623157e308, "tiny": 5e-324}',
    ],
)
def test_what_orjson_reads_is_what_json_reads(body: bytes) -> None:
    document = fast_object(body)
    assert document is not None
    assert repr(document) == _as_json_reads(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"x": 18446744073709551616}',  # past 64 bits: orjson would give a double
        b'{"x": -9223372036854775809}',
        b'{"x": 123456789012345678901234567890}',
        b'{"x": 1234567890123456789}',  # 19 digits: left to json even in range
        b'{"x": 1e400}',  # json: inf
        b'{"x": NaN}',
        b'{"x": -Infinity}',
        b'\xef\xbb\xbf{"x": 1}',  # a byte-order mark
        b'{"x": "\xff"}',  # not UTF-8: TF passes the bytes through
        b'{"x": "\\ud800"}',  # a lone surrogate
        b'{"x": 1} trailing',  # TF ignores text after the document
        b'[1, 2]',  # not an object: the caller's own message
        b'',
        b'{"x": [' + b"[" * 2000 + b"]" * 2000 + b"]}",
    ],
)
def test_the_rest_is_left_to_json(body: bytes) -> None:
    assert fast_object(body) is None


def test_numbers_read_alike() -> None:
    rng = random.Random(7)
    texts = []
    for _ in range(20000):
        kind = rng.randrange(4)
        if kind == 0:
            value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
            if value != value or value in (float("inf"), float("-inf")):
                continue
            texts.append(repr(value))
        elif kind == 1:
            texts.append(f"{rng.uniform(-1e3, 1e3):.{rng.randint(1, 18)}f}")
        elif kind == 2:
            texts.append(f"{rng.randint(1, 10**17)}e{rng.randint(-330, 290)}")
        else:
            texts.append(str(rng.randint(-(10**18), 10**18)))
    body = ('{"values": [' + ", ".join(texts) + "]}").encode()
    read = fast_object(body)
    assert read is not None
    assert repr(read) == _as_json_reads(body)


def test_an_image_body_is_read_by_orjson() -> None:
    rng = random.Random(3)
    image = [[[rng.random() for _ in range(3)] for _ in range(224)] for _ in range(224)]
    body = json.dumps({"instances": [image]}).encode()
    assert fast_object(body) == json.loads(body)


def _many_lists(rows: int) -> bytes:
    return json.dumps({"instances": [[1.0]] * rows}).encode()


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_large_body_is_parsed_with_the_collector_paused(collector_on: None) -> None:
    """Its 100,000 lists would set the collector off about 140 times; none runs, and the
    collector is on again once the parse is over."""
    body = _many_lists(100_000)
    assert len(body) >= LARGE_BODY
    runs: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.callbacks.append(count)
    try:
        document = fast_object(body)
    finally:
        gc.callbacks.remove(count)
    assert document is not None and len(document["instances"]) == 100_000
    assert runs == []
    assert gc.isenabled()


def test_the_collector_resumes_when_the_last_parse_ends(collector_on: None) -> None:
    with CollectorPaused(LARGE_BODY):  # another thread's parse, still going
        assert not gc.isenabled()
        done = threading.Thread(target=fast_object, args=(_many_lists(20_000),))
        done.start()
        done.join()
        assert not gc.isenabled()
        with CollectorPaused(LARGE_BODY - 1):  # a small body: no pause of its own
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_switched_off_stays_off(collector_on: None) -> None:
    gc.disable()
    assert fast_object(_many_lists(20_000)) is not None
    assert not gc.isenabled()
