"""JSON from a recorder volume: every hostile text is read or refused with UnreadableJson."""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import sys
from typing import Any

import pytest

from firmware_interface.untrusted_json import MAX_DEPTH, UnreadableJson, loads


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def depth_of(value: Any) -> int:
    return 1 + max(map(depth_of, value), default=0) if isinstance(value, list) else 0


@pytest.mark.parametrize(
    "text",
    [
        '{"device_id": "ZFY0012345", "battery_pct": 64.5, "faults": ["x", 1, null, true]}',
        '{"ts": "2026-11-21T09:14:03", "event": "rec_stop", "reason": "low_battery"}',
        '"水政监察大队"',
        "[1e308, -1e-400, 123456789012345678901234567890]",
        nested(MAX_DEPTH),
    ],
)
def test_ordinary_json_reads_as_json_loads_reads_it(text: str) -> None:
    assert loads(text.encode()) == (json.loads(text), [])


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[" * 5000, "nested deeper than 16"),  # RecursionError in json.loads
        (nested(MAX_DEPTH + 1).encode(), "nested deeper than 16"),
        (nested(900).encode(), "nested deeper than 16"),  # parses, but too deep to keep
        (b'{"a": "\xff\xfe"}', "not UTF-8"),
        (b'{"a": 1', "not valid JSON"),
        (b"", "not valid JSON"),
    ],
)
def test_hostile_text_is_unreadable_json_never_another_error(raw: bytes, words: str) -> None:
    with pytest.raises(UnreadableJson, match=words):
        loads(raw)


def test_numbers_out_of_range_read_as_null_and_are_reported() -> None:
    raw = b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e999, "e": %s, "f": 7}' % (b"9" * 5000)
    value, repairs = loads(raw)
    assert value == {"a": None, "b": None, "c": None, "d": None, "e": None, "f": 7}
    assert repairs == ["5 number(s) out of range (NaN, infinite, huge) read as null"]


def test_lone_surrogates_are_repaired_so_the_value_can_be_written_as_utf8() -> None:
    value, repairs = loads(b'{"officer_id": "01\\ud800", "\\udfff": "ok"}')
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # would raise UnicodeEncodeError
    assert value["officer_id"].startswith("01\ufffd") and len(repairs) == 1


def test_salvage_keeps_the_rest_of_a_document_with_a_deep_value() -> None:
    deep = "[" * 5000 + "]" * 5000
    raw = f'{{"device_id": "ZFY0012345", "junk": {deep}, "note": "[[[", "battery_pct": 64}}'
    value, repairs = loads(raw.encode(), salvage=True)
    assert value["device_id"] == "ZFY0012345" and value["battery_pct"] == 64
    assert value["note"] == "[[["  # brackets inside strings are not nesting
    assert depth_of(value["junk"]) == MAX_DEPTH - 1  # cut where it went too deep
    assert repairs == [f"1 value(s) nested deeper than {MAX_DEPTH} read as null"]


def test_salvage_still_refuses_what_is_not_json() -> None:
    with pytest.raises(UnreadableJson):
        loads(b'{"device_id": "ZFY0012345", "junk": ' + b"[" * 5000 + b"}", salvage=True)
    with pytest.raises(UnreadableJson):
        loads(b'{"a": "' + b'\\"' * 100_000, salvage=True)  # an unterminated string


class _Cyclic:
    """Garbage the collector finalises wherever it runs: its finaliser needs some stack."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        _descend(60)


def _descend(n: int) -> int:
    return 0 if n == 0 else 1 + _descend(n - 1)


def test_hostile_nesting_never_takes_the_stack_near_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A collection run deep inside the parser (on a busy dock, any thread's garbage) failed
    for want of stack: 'Exception ignored in sys.unraisablehook' ended a test run."""
    failed: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", failed.append)
    threshold = gc.get_threshold()
    room = sys.getrecursionlimit() - len(inspect.stack())
    try:
        for offset in range(10, 300, 10):  # a collection at each depth the parser may reach
            gc.collect()
            gc.disable()
            garbage = [_Cyclic() for _ in range(5)]
            del garbage
            gc.set_threshold(max(1, room - offset))  # after that many of the parser's lists
            gc.enable()
            with contextlib.suppress(UnreadableJson):
                loads(b"[" * 5000, salvage=True)
    finally:
        gc.set_threshold(*threshold)
        gc.enable()
        gc.collect()
    assert failed == []
