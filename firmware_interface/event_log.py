"""The recorder's event log (LOG/events.jsonl): hostile lines become findings, never errors."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import BinaryIO

from firmware_interface.base import EventLog, Recorder, RecorderError, RecorderEvent, RecorderGone
from firmware_interface.findings import warning
from firmware_interface.untrusted_json import loads
from firmware_interface.volume import EVENT_LOG, Volume, gone_or_raise

logger = logging.getLogger(__name__)

MAX_EVENT_LOG_BYTES = 16 * 1024 * 1024
MAX_EVENT_LINE = 64 * 1024
MAX_LINE_FINDINGS = 20  # then one summary: a log of a million bad lines is one bay finding
MAX_BAD_LINES = 1000  # a log this bad is not read further (8M bad lines would take minutes)
MAX_EVENTS = 200_000
READ_CHUNK = 1024 * 1024


def read_events_of(recorder: Recorder) -> EventLog:
    """A recorder's event log (empty when it keeps none); only RecorderGone is ever raised."""
    if not recorder.capabilities.event_log:
        return EventLog()
    try:
        return recorder.read_events()
    except RecorderGone:
        raise
    except Exception:  # a driver's bug on a hostile log must never stop the clips' analysis
        logger.exception("the recorder's event log could not be read")
        return EventLog(
            findings=[warning("bad_event_log", "the recorder's event log is unreadable")]
        )


def read_event_log(volume: Volume) -> EventLog:
    """The recorder's event log; malformed lines become findings, never errors."""
    log = EventLog()
    try:
        fh = volume.open_file(EVENT_LOG)
    except RecorderGone:
        raise
    except RecorderError as exc:
        if not isinstance(exc.__cause__, FileNotFoundError):
            log.findings.append(warning("bad_event_log", f"{EVENT_LOG}: {exc}"))
        return log
    skipped = _LineFindings(log)
    try:
        with fh:
            _read_lines(fh, log, skipped)
    except OSError as exc:
        error = gone_or_raise(exc)
        if isinstance(error, RecorderGone):
            raise error from exc
        log.findings.append(warning("bad_event_log", f"{EVENT_LOG}: {error}"))
    skipped.close()
    return log


def _read_lines(fh: BinaryIO, log: EventLog, skipped: _LineFindings) -> None:
    """Parse line by line, never holding more than one line of MAX_EVENT_LINE bytes."""
    total = lineno = 0
    while line := fh.readline(MAX_EVENT_LINE + 1):
        lineno += 1
        total += len(line)
        if len(line) > MAX_EVENT_LINE:
            total += _skip_rest_of_line(fh, MAX_EVENT_LOG_BYTES - total)
            skipped.add(lineno, f"skipped: longer than {MAX_EVENT_LINE} bytes")
        elif line.strip():
            _parse_event_line(line, lineno, log, skipped)
        stop = _limit_reached(total, skipped.bad, len(log.events))
        if stop:
            log.findings.append(warning("bad_event_log", f"{EVENT_LOG}: not read beyond {stop}"))
            return


def _limit_reached(total: int, bad: int, events: int) -> str:
    """Why reading stops here ("" to go on): a hostile log must not hold the bay for minutes."""
    if total > MAX_EVENT_LOG_BYTES:
        return f"{MAX_EVENT_LOG_BYTES} bytes"
    if bad >= MAX_BAD_LINES:
        return f"{MAX_BAD_LINES} bad lines"
    if events >= MAX_EVENTS:
        return f"{MAX_EVENTS} events"
    return ""


def _skip_rest_of_line(fh: BinaryIO, budget: int) -> int:
    """Read past the end of an overlong line (at most `budget` bytes); the bytes read."""
    read = 0
    while read <= budget:
        chunk = fh.readline(READ_CHUNK)
        read += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            break
    return read


class _LineFindings:
    """A finding for each of the first MAX_LINE_FINDINGS bad lines, then one for the rest."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.bad = 0  # lines skipped
        self.more = 0  # lines with no finding of their own

    def add(self, lineno: int, what: str, code: str = "bad_event_line") -> None:
        self.bad += code == "bad_event_line"
        if len(self.log.findings) >= MAX_LINE_FINDINGS:
            self.more += 1
            return
        self.log.findings.append(warning(code, f"{EVENT_LOG} line {lineno} {what}", line=lineno))

    def close(self) -> None:
        if self.more:
            self.log.findings.append(
                warning("bad_event_line", f"{EVENT_LOG}: {self.more} more bad lines")
            )


def _parse_event_line(line: bytes, lineno: int, log: EventLog, skipped: _LineFindings) -> None:
    try:
        obj, repairs = loads(line)
        if not isinstance(obj, dict):
            raise TypeError("not a JSON object")
        ts = obj["ts"]
        if not isinstance(ts, str) or len(ts) > 64:
            raise TypeError("ts is not a timestamp string")
        when = datetime.fromisoformat(ts).replace(tzinfo=None)
        event = obj["event"]
        if not isinstance(event, str):
            raise TypeError("event is not a string")
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        skipped.add(lineno, f"skipped: {str(exc)[:200]}")
        return
    if repairs:
        skipped.add(lineno, f"kept, but {'; '.join(repairs)}", "event_line_repaired")
    fields = {k: v for k, v in obj.items() if k not in ("ts", "event")}
    log.events.append(RecorderEvent(when, event[:64], fields))
