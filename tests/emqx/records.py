"""What the EMQX-behaving fixture records, for tests to assert on (see tests/emqx/fixture.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class InitSeen:
    """One `init` as it arrived, and how the fixture answered it (`reason` None = success)."""

    client: str
    file_id: str
    topic: str
    payload: bytes
    meta: dict[str, Any] | None  # decoded filemeta (checksum as bytes), None if refused as invalid
    reason: str | None
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Answer:
    """One response message the fixture published (as EMQX's emqx_ft:publish_response/2)."""

    client: str
    command_topic: str
    reply_topic: str
    correlation: bytes | None
    reason: str | None  # None = success (0x00); else the 0x80 reason_description
    at: float  # time.monotonic()

    @property
    def ok(self) -> bool:
        """Whether the answer was reason code 0."""
        return self.reason is None


@dataclass(frozen=True)
class Export:
    """One assembled file, exported as EMQX's exporter would (bytes on disk under the root)."""

    client: str
    file_id: str
    name: str
    path: Path
    size: int
    sha256: str  # hex of the bytes written
    filemeta: dict[str, Any]  # as decoded from the init (checksum as bytes)
    s3_metadata: dict[str, str]  # the x-amz-meta-* headers EMQX's S3 exporter would send
    at: float  # time.monotonic()

    @property
    def user_data(self) -> Any:
        """The init's user_data (None when it had none)."""
        return self.filemeta.get("user_data")

    @property
    def s3_metadata_bytes(self) -> int:
        """Bytes of user metadata S3 counts against its 2 KB limit (UTF-8 keys and values)."""
        return sum(len(k.encode()) + len(v.encode()) for k, v in self.s3_metadata.items())


@dataclass(frozen=True)
class Unheard:
    """A command the fixture could not act on: no way to tell its client, or too large."""

    topic: str
    payload_bytes: int
    why: str  # "no response topic" | "packet too large"
    at: float  # time.monotonic()
