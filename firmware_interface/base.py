"""The recorder driver interface: what the agent may ask of any body-worn recorder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Protocol, runtime_checkable

from firmware_interface.findings import Finding

VIDEO_EXTS = frozenset({".mp4", ".mov", ".avi"})
AUDIO_EXTS = frozenset({".wav", ".aac", ".mp3"})
PHOTO_EXTS = frozenset({".jpg", ".jpeg"})


def media_type_of(name: str) -> str | None:
    """'video', 'audio', 'photo' by file extension, or None for non-media."""
    ext = name[name.rfind(".") :].lower() if "." in name else ""
    if ext in VIDEO_EXTS:
        return "video"
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in PHOTO_EXTS:
        return "photo"
    return None


class RecorderError(Exception):
    """A recorder refused or failed an operation; the message says which and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ClipMissing(RecorderError):
    """The file asked for is not on the recorder (any more)."""

    def __init__(self, message: str) -> None:
        super().__init__("clip_missing", message)


class RecorderGone(RecorderError):
    """The recorder vanished (unplugged, I/O error on its volume) mid-operation."""

    def __init__(self, message: str = "recorder was removed") -> None:
        super().__init__("recorder_gone", message)


@dataclass(frozen=True)
class Capabilities:
    """What this recorder's driver can do."""

    read_clock: bool = True
    set_clock: bool = True
    delete: bool = True
    event_log: bool = True


@dataclass(frozen=True)
class Identity:
    """Who the recorder is and who carries it."""

    device_id: str
    model: str = ""
    firmware: str = ""
    officer_id: str = ""
    officer_name: str = ""
    unit_no: str = ""
    unit_name: str = ""


@dataclass(frozen=True)
class Status:
    """The recorder's condition as it reports it. Values are as reported: policy judges them."""

    battery_pct: float | None = None
    charging: bool = False
    storage_total_bytes: int | None = None
    storage_free_bytes: int | None = None
    clock: datetime | None = None  # naive, in the recorder's local time; None = cannot be read
    faults: tuple[str, ...] = ()
    resolution: tuple[int, int] | None = None  # recording width, height; None = not reported


@dataclass(frozen=True)
class ClipEntry:
    """One media file on the recorder, addressed by its path relative to the volume root."""

    path: str  # POSIX, relative, e.g. "DCIM/100MEDIA/X.MP4"; never absolute, never ".."
    size: int
    mtime: float
    media_type: str

    @property
    def name(self) -> str:
        """The file name without directories."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RecorderEvent:
    """One line of the recorder's event log, with its local timestamp parsed."""

    ts: datetime  # naive, recorder local time
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Listing:
    """What a scan of the recorder found: clips, and findings about what was refused."""

    clips: list[ClipEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


@dataclass
class EventLog:
    """The recorder's event log, and findings about lines that could not be read."""

    events: list[RecorderEvent] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


@runtime_checkable
class Recorder(Protocol):
    """A docked recorder, as any driver presents it. Every call may raise RecorderGone."""

    capabilities: Capabilities

    def identity(self) -> Identity:
        """Serial, model, firmware and officer; raises RecorderError when unreadable."""
        ...

    def status(self) -> Status:
        """Battery, storage, clock and faults, as the recorder reports them."""
        ...

    def identity_findings(self) -> list[Finding]:
        """Problems met while reading identity and status (malformed files, bad values)."""
        ...

    def set_clock(self, now: datetime) -> None:
        """Set the recorder's clock to `now` (naive, recorder local time)."""
        ...

    def list_clips(self) -> Listing:
        """Every media file, never following links or leaving the volume."""
        ...

    def open_clip(self, clip: ClipEntry) -> BinaryIO:
        """Open one clip for reading, refusing anything that is not a regular file inside."""
        ...

    def delete_clip(self, clip: ClipEntry) -> None:
        """Delete one clip from the recorder (the agent calls this only when policy allows)."""
        ...

    def read_events(self) -> EventLog:
        """The recorder's event log, empty when it has none."""
        ...

    def close(self) -> None:
        """Release the recorder (unmount, disconnect)."""
        ...


def iter_chunks(fh: BinaryIO, size: int) -> Iterator[bytes]:
    """Read a file in chunks of `size` bytes."""
    while chunk := fh.read(size):
        yield chunk
