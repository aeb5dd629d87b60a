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
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if type(document) is dict else None
