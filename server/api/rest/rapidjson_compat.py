"""Parsing and quoting JSON the way TF Serving's rapidjson does, for the messages it produces.

TF Serving reports parse errors in rapidjson's words ("JSON Parse error:
Invalid value. at offset: 0") and quotes offending values as rapidjson's
PrettyWriter prints them (single-line arrays, 4-space indents, cut once 256
bytes are written: json_tensor.cc JsonValueToDebugString). Clients and TF
Serving's own tests match on those messages, so both are reproduced here
over the standard library's parser.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from decimal import Decimal
from typing import Any, Final

from onnx_serving.codec.json_body import CollectorPaused, fast_object
from onnx_serving.server.errors import InvalidArgument

_DECODER: Final = json.JSONDecoder()
_DEBUG_LIMIT: Final = 256
_INDENT: Final = "    "
_JSON_SPACE: Final = " \t\n\r"
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1

# json's messages → rapidjson's (rapidjson/error/en.h).
_PARSE_ERRORS: Final = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Illegal trailing comma before end of object": "Missing a name for object member.",
    "Illegal trailing comma before end of array": "Invalid value.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
NUMBER_TOO_BIG: Final = "Number too big to be stored in double."
_ARRAY_COMMA: Final = "Missing a comma or ']' after an array element."
_OBJECT_COMMA: Final = "Missing a comma or '}' after an object member."
_BRACKETS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_STRING_OR_LONG_INTEGER: Final = re.compile(r'"(?:[^"\\]|\\.)*"|(-?[0-9]{4301,})', re.DOTALL)

# rapidjson's Writer escapes '"', '\\' and control characters, as \u00XX in upper case.
_ESCAPES: Final = {c: f"\\u{c:04X}" for c in range(0x20)} | {
    0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r",
    ord('"'): '\\"', ord("\\"): "\\\\",
}


def parse_object(body: bytes) -> dict[str, Any]:
    """The request document, which must be an object. Text after it is ignored, as in TF."""
    document = fast_object(body)
    if document is not None:
        return document
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    # Undecodable bytes survive as surrogates: TF passes string bytes through untouched.
    text = body.decode("utf-8", "surrogateescape")
    start = 1 if text.startswith("\ufeff") else 0
    while start < len(text) and text[start] in _JSON_SPACE:
        start += 1
    if start == len(text):
        raise InvalidArgument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    try:
        with CollectorPaused(len(body)):
            document, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        message, position = _parse_error(exc, text)
        offset = len(text[:position].encode("utf-8", "surrogateescape"))
        raise InvalidArgument(f"JSON Parse error: {message} at offset: {offset}") from None
    except RecursionError:
        raise InvalidArgument("JSON Parse error: the document is nested too deeply") from None
    except ValueError:  # an integer past Python's int_max_str_digits (4,300 digits)
        offset = _huge_number_offset(text)
        raise InvalidArgument(
            f"JSON Parse error: {NUMBER_TOO_BIG} at offset: {offset}"
        ) from None
    if type(document) is not dict:
        raise InvalidArgument(f"JSON Value: {debug_string(document)} Is not object")
    return document


def _huge_number_offset(text: str) -> int:
    """Where the first integer too long for Python starts. rapidjson refuses any number past
    a double's range (about 309 digits) with this message; Python takes them up to its
    limit, which is the only one that fails here."""
    for match in _STRING_OR_LONG_INTEGER.finditer(text):
        if match.group(1):
            return len(text[:match.start(1)].encode("utf-8", "surrogateescape"))
    return 0


def _parse_error(exc: json.JSONDecodeError, text: str) -> tuple[str, int]:
    if exc.msg == "Expecting ',' delimiter":
        return (_ARRAY_COMMA if _innermost(text, exc.pos) == "[" else _OBJECT_COMMA), exc.pos
    if exc.msg.startswith("Unterminated string"):
        # rapidjson notices at the end of the input, not where the string starts.
        return _PARSE_ERRORS["Unterminated string starting at"], len(text)
    return _PARSE_ERRORS.get(exc.msg, f"{exc.msg}."), exc.pos


def _innermost(text: str, position: int) -> str:
    """The bracket of the container open at ``position`` (only called on errors)."""
    stack: list[str] = []
    for match in _BRACKETS.finditer(text, 0, position):
        token = match.group()
        if token in "[{":
            stack.append(token)
        elif token in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else "{"


def type_name(value: Any) -> str:
    """rapidjson's type names, as TF's messages use them."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def debug_string(value: Any) -> str:
    """``value`` as TF Serving quotes it in error messages."""
    writer = _DebugWriter()
    # TF's writer stops the same way: the text so far is what the message quotes.
    with contextlib.suppress(_Stop):
        writer.value(value)
    return "".join(writer.parts)


class _Stop(Exception):
    """The writer reached its byte limit, or a value it refuses (NaN, infinities)."""


class _DebugWriter:
    """rapidjson's PrettyWriter(kFormatSingleLineArray) behind TF's JsonWriterWithLimit."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._size = 0
        self._levels: list[list[Any]] = []  # [in_array, value_count] per open container

    def value(self, value: Any) -> None:
        if isinstance(value, list):
            self._start("[")
            for item in value:
                self.value(item)
            self._end()
        elif isinstance(value, dict):
            self._start("{")
            for key, item in value.items():
                self._scalar(string_text(key))
                self.value(item)
            self._end()
        elif isinstance(value, float) and not math.isfinite(value):
            self._check()
            self._prefix()
            raise _Stop  # rapidjson's Writer refuses NaN and infinities
        else:
            self._scalar(_scalar_text(value))

    def _scalar(self, text: str) -> None:
        self._check()
        self._prefix()
        self._put(text)

    def _start(self, bracket: str) -> None:
        self._check()
        self._prefix()
        self._put(bracket)
        self._levels.append([bracket == "[", 0])

    def _end(self) -> None:
        self._check()
        in_array, count = self._levels.pop()
        if not in_array and count:
            self._put("\n" + _INDENT * len(self._levels))
        self._put("]" if in_array else "}")

    def _prefix(self) -> None:
        if not self._levels:
            return
        level = self._levels[-1]
        in_array, count = level
        if in_array:
            if count:
                self._put(", ")
        else:
            if count:
                self._put(",\n" if count % 2 == 0 else ": ")
            else:
                self._put("\n")
            if count % 2 == 0:
                self._put(_INDENT * len(self._levels))
        level[1] = count + 1

    def _check(self) -> None:
        if self._size >= _DEBUG_LIMIT:
            raise _Stop

    def _put(self, text: str) -> None:
        self.parts.append(text)
        self._size += len(text.encode("utf-8", "surrogatepass"))


def _scalar_text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return string_text(value)
    if isinstance(value, int) and _INT64_MIN <= value <= _UINT64_MAX:
        return str(value)
    try:
        return double_text(float(value))  # rapidjson keeps wider integers as doubles
    except OverflowError:  # past a double's range: rapidjson refuses the document
        raise InvalidArgument(f"JSON Parse error: {NUMBER_TOO_BIG}") from None


def string_text(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def double_text(value: float) -> str:
    """rapidjson's Writer::Double: shortest digits, laid out by its Prettify()."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    k = int(exponent)
    length = len(digits)
    kk = length + k  # 10^(kk-1) <= value < 10^kk
    if k >= 0 and kk <= 21:
        return f"{sign}{digits}{'0' * k}.0"
    if 0 < kk <= 21:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -6 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    mantissa = digits if length == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{mantissa}e{kk - 1}"
