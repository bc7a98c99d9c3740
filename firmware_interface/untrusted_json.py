"""JSON from a recorder volume, read so that no content can raise anything but UnreadableJson.

Hostile JSON breaks readers in ways `json.loads` does not call ValueError: 5,000 `[` raise
RecursionError, `1e999` and `NaN` parse to floats that later overflow `int()` or `timedelta`,
5,000 digits raise ValueError from `int()`, `"\\ud800"` parses to a string no UTF-8 writer
(custody log, MQTT) can encode. Here numbers beyond a double or 40 digits become None, lone
surrogates become U+FFFD, and values nested deeper than `max_depth` become None (`salvage`)
or make the text unreadable; every repair is reported so the caller can make it a finding.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 16
# Deeper text is never handed to json's parser: it would recurse to Python's limit, and any
# finalizer the garbage collector runs down there fails for want of stack (seen as an
# "Exception ignored in sys.unraisablehook" on a busy machine).
PARSE_DEPTH = 256
MAX_INT_DIGITS = 40
# a string (to its end, even unterminated: linear time) or a bracket
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.S)


class UnreadableJson(ValueError):
    """The text is not JSON this dock reads; the message says why."""


class _OutOfRange:
    """Stands for a number no reader should meet (NaN, infinity, 10**5000) until it is None."""


_OUT_OF_RANGE = _OutOfRange()


def _constant(_name: str) -> _OutOfRange:
    return _OUT_OF_RANGE


def _float(text: str) -> float | _OutOfRange:
    value = float(text)
    return value if math.isfinite(value) else _OUT_OF_RANGE


def _int(text: str) -> int | _OutOfRange:
    return int(text) if len(text) <= MAX_INT_DIGITS else _OUT_OF_RANGE


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int)


def loads(
    data: bytes | str, max_depth: int = MAX_DEPTH, salvage: bool = False
) -> tuple[Any, list[str]]:
    """The value and the repairs made to it; UnreadableJson when it cannot be read at all."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableJson(f"not UTF-8 (byte {exc.start})") from None
    too_deep = UnreadableJson(f"nested deeper than {max_depth} levels")
    cut = 0
    if _deeper_than(data, PARSE_DEPTH):  # never let the parser near the recursion limit
        if not salvage:
            raise too_deep
        data, cut = _cut_deep(data, max_depth)
        if _deeper_than(data, PARSE_DEPTH):  # brackets never closed: nothing was cut
            raise too_deep
    try:
        value = _parse(data)
    except RecursionError:  # a caller already deep in its own stack
        raise too_deep from None
    repairs = _Repairs(max_depth, salvage)
    repairs.deep = cut
    value = repairs.clean(value, 0)
    return value, repairs.report()


def _parse(text: str) -> Any:
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise UnreadableJson(f"not valid JSON: {str(exc)[:120]}") from None


def _deeper_than(text: str, limit: int) -> bool:
    """Whether brackets outside strings in `text` nest deeper than `limit` (linear time)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
    return False


def _cut_deep(text: str, max_depth: int) -> tuple[str, int]:
    """`text` with every array or object deeper than `max_depth` replaced by null; how many."""
    out: list[str] = []
    depth, start, kept, cut = 0, 0, 0, 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth == max_depth + 1:
                start = match.start()
        elif token in ("]", "}"):
            if depth == max_depth + 1:
                out += [text[kept:start], "null"]
                kept = match.end()
                cut += 1
            depth -= 1
    out.append(text[kept:])
    return "".join(out), cut


class _Repairs:
    """Walks a parsed value, repairing what no later reader should meet, and counts it."""

    def __init__(self, max_depth: int, salvage: bool) -> None:
        self.max_depth = max_depth
        self.salvage = salvage
        self.numbers = self.strings = self.deep = 0

    def clean(self, value: Any, depth: int) -> Any:
        if isinstance(value, _OutOfRange):
            self.numbers += 1
            return None
        if isinstance(value, str):
            return self._text(value)
        if not isinstance(value, dict | list):
            return value
        if depth >= self.max_depth:
            if not self.salvage:
                raise UnreadableJson(f"nested deeper than {self.max_depth} levels")
            self.deep += 1
            return None
        if isinstance(value, list):
            return [self.clean(v, depth + 1) for v in value]
        return {self._text(k): self.clean(v, depth + 1) for k, v in value.items()}

    def _text(self, text: str) -> str:
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from \ud800-style escapes
            self.strings += 1
            return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return text

    def report(self) -> list[str]:
        """What was repaired, in words."""
        out = []
        if self.numbers:
            out.append(f"{self.numbers} number(s) out of range (NaN, infinite, huge) read as null")
        if self.deep:
            out.append(f"{self.deep} value(s) nested deeper than {self.max_depth} read as null")
        if self.strings:
            out.append(f"{self.strings} string(s) with invalid characters repaired")
        return out
