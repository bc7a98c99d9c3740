"""Logging: the journal with structured fields under systemd, a readable stderr format elsewhere.

Evidence log lines carry `extra={"DOCK_ID": ..., "BAY": ..., "DEVICE_ID": ..., "CLIP_SHA256": ...}`;
the journal stores them as fields (`journalctl DEVICE_ID=ZFY0012345`), stderr shows them in
brackets. Secrets registered with `register_secret` are masked in every message.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

FIELDS = ("DOCK_ID", "BAY", "DEVICE_ID", "CLIP_SHA256")
MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()
_OURS = "_dock_agent_handler"


def register_secret(value: str) -> None:
    """Never let `value` (a password, a key) appear in a log message."""
    if len(value) >= 4:  # masking tiny strings would garble ordinary words
        with _lock:
            _secrets.add(value)


class RedactSecrets(logging.Filter):
    """Masks registered secrets in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message when it contains a secret."""
        if not _secrets:
            return True
        message = record.getMessage()
        masked = message
        with _lock:  # the longest first: a secret that contains another is masked whole
            secrets = sorted(_secrets, key=len, reverse=True)
        for secret in secrets:
            masked = masked.replace(secret, MASK)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


class FieldsFormatter(logging.Formatter):
    """A readable line that also shows the structured evidence fields present on the record."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, with ` [BAY=2 DEVICE_ID=...]` when the record carries fields."""
        line = super().format(record)
        fields = [f"{k}={getattr(record, k)}" for k in FIELDS if hasattr(record, k)]
        return f"{line} [{' '.join(fields)}]" if fields else line


def under_journal() -> bool:
    """True when our stderr is connected to the journal (JOURNAL_STREAM names it)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = stream.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def _journal_handler(dock_id: str | None) -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    defaults = {"SYSLOG_IDENTIFIER": "dock-agent"}
    if dock_id:
        defaults["DOCK_ID"] = dock_id
    handler: logging.Handler = JournalHandler(**defaults)
    return handler


def setup_logging(
    level: str | int = "INFO", *, dock_id: str | None = None, journal: bool | None = None
) -> logging.Handler:
    """Install the root handler (journal under systemd, else stderr); safe to call again."""
    use_journal = under_journal() if journal is None else journal
    handler = _journal_handler(dock_id) if use_journal else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(FieldsFormatter())
    handler.addFilter(RedactSecrets())
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("paho").setLevel(logging.WARNING)
    return handler
