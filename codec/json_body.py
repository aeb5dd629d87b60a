"""JSON request bodies read by orjson wherever it reads them exactly as the standard library.

A REST body carrying an image is a few megabytes of numbers: the standard
library's parser takes about 70 ms on MobileNetV2's 3.2 MB ``instances``,
orjson about 30. The two give the same document for every body both accept
but one kind: orjson reads an integer past 64 bits as a double, where ``json``
keeps it whole (and TF Serving's messages quote it, or refuse it as out of
range). A body with 19 digits in a row outside a fraction is therefore left
to ``json`` (finding out takes a few ms on a 3 MB body), and so
is every body orjson refuses (NaN and infinities, numbers past a double's
range, a byte-order mark, bytes that are not UTF-8, lone surrogates, text after
the document, nesting past its depth limit): the caller's own parse then gives
its usual document or error message.
"""

from __future__ import annotations

import gc
import threading
from typing import Any, Final

import orjson

# Every digit as "0": a run of 19 of them is an integer orjson may read inexactly (2**63
# has 19 digits) unless it follows a decimal point or another digit, as a fraction's do
# (repr writes 0.00012345678901234567 out, and both parsers read fractions alike).
_DIGITS_AS_ZEROS: Final = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN: Final = b"0" * 19
_FRACTION: Final = frozenset(b".0")


def _has_long_integer(body: bytes) -> bool:
    zeros = body.translate(_DIGITS_AS_ZEROS)
    at = zeros.find(_NINETEEN)
    while at >= 0:
        if at == 0 or zeros[at - 1] not in _FRACTION:
            return True
        at = zeros.find(_NINETEEN, at + len(_NINETEEN))
    return False


def fast_object(body: bytes) -> dict[str, Any] | None:
    """The document when it is an object that orjson reads as ``json.loads`` would;
    None: parse ``body`` the standard library's way (which also words any error)."""
    if _has_long_integer(body):
        return None
    try:
        with CollectorPaused(len(body)):
            document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if type(document) is dict else None


# Bodies from this size on are parsed with Python's cyclic collector paused: their lists
# outnumber the young generation's threshold (700 containers) many times over.
LARGE_BODY: Final = 64 * 1024


class CollectorPaused:
    """Python's cyclic garbage collector paused while a large body is parsed.

    Every list a parse makes is a new container, so the collector runs again and again
    during it, each full run walking the whole server's heap as well: a 2.1 MB body of
    300,000 rows took 0.28 s to parse in the server, 0.19 s of it collecting (three full
    runs) with nothing to free, since a parsed document holds no cycles, and every other
    request waited on the GIL meanwhile. Paused, its parse took 0.05 s and one young
    collection after it 0.03 s. Collection is put off, never skipped: it resumes when the
    last parse in any thread ends, unless it was off before the first began.
    """

    __slots__ = ("_pauses",)
    _lock = threading.Lock()
    _parsing = 0
    _was_enabled = False

    def __init__(self, size: int) -> None:
        self._pauses = size >= LARGE_BODY

    def __enter__(self) -> None:
        if self._pauses:
            with CollectorPaused._lock:
                if CollectorPaused._parsing == 0:
                    CollectorPaused._was_enabled = gc.isenabled()
                    gc.disable()
                CollectorPaused._parsing += 1

    def __exit__(self, *exc_info: object) -> None:
        if self._pauses:
            with CollectorPaused._lock:
                CollectorPaused._parsing -= 1
                if CollectorPaused._parsing == 0 and CollectorPaused._was_enabled:
                    gc.enable()
