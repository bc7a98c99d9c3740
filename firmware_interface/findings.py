"""Findings: what the dock noticed about a recorder, a clip or itself, in words people read.

Owned by the hardware layer (drivers report findings); agent.findings re-exports them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

INFO = "info"
WARNING = "warning"
FAULT = "fault"


@dataclass(frozen=True)
class Finding:
    """One observation: a stable code, a severity, a sentence, and structured detail."""

    code: str
    message: str
    severity: str = WARNING
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict."""
        return asdict(self)


def fault(code: str, message: str, **detail: Any) -> Finding:
    """A finding that stops a bay from reaching ready."""
    return Finding(code, message, FAULT, detail)


def warning(code: str, message: str, **detail: Any) -> Finding:
    """A finding worth telling people, that does not stop the bay."""
    return Finding(code, message, WARNING, detail)


def info(code: str, message: str, **detail: Any) -> Finding:
    """A finding for the record."""
    return Finding(code, message, INFO, detail)
