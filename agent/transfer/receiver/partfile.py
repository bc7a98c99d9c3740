"""One file being assembled: its state, its descriptor (opened on demand), writes and hash."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent import durable
from agent.transfer import protocol as p
from agent.transfer.receiver.coverage import MAX_RANGES, Coverage
from agent.transfer.receiver.expiry import MANIFEST, PARTIAL_DIR

_READ_CHUNK = 1 << 20
DONE_INIT = ".init.json"  # beside a complete file: its first init and SHA-256, for re-inits


class StorageError(p.ProtocolError):
    """The store could not write (disk full, I/O error); logged once where it happened."""


def storage_error(exc: OSError) -> StorageError:
    """The refusal for a failed write: no space is QUOTA_EXCEEDED, anything else unspecified."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(p.QUOTA_EXCEEDED, f"receiver: no space left ({_errno_name(exc)})")
    return StorageError(p.UNSPECIFIED_ERROR, f"receiver: could not write: {exc}")


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


@dataclass
class Partial:
    """One file being assembled: declared meta, coverage, running hash, descriptor when open."""

    dir: Path
    meta: p.FileMeta
    coverage: Coverage
    fd: int | None = None  # opened on the first write, closed when least recently used
    hasher: Any = field(default_factory=hashlib.sha256)
    hashed_upto: int = 0
    dirty: bool = False
    saved: list[list[int]] = field(default_factory=list)  # the coverage last made durable
    failed: StorageError | None = None  # the first write error since `init`; fin reports it

    @property
    def data_path(self) -> Path:
        """The partial data file."""
        return self.dir / PARTIAL_DIR / "data"

    def open_fd(self) -> int:
        """The data file's descriptor, opened now if it is not."""
        if self.fd is None:
            self.fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return self.fd

    def close_fd(self) -> None:
        """Close the descriptor (reopened on demand)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def account(self, offset: int, data: bytes | bytearray) -> None:
        """Extend the running hash when `data` continues it; restart it on a rewrite."""
        if offset == self.hashed_upto:
            self.hasher.update(data)
            self.hashed_upto += len(data)
        elif offset < self.hashed_upto:
            self.hasher, self.hashed_upto = hashlib.sha256(), 0

    def forget_unsynced(self) -> None:
        """After a failed fsync: trust only the coverage last made durable, and hash it all again."""
        self.coverage = Coverage.from_json(self.saved)
        self.hasher, self.hashed_upto = hashlib.sha256(), 0
        self.dirty = False

    def whole_hash(self) -> str:
        """The SHA-256 of the whole file, reading only what the running hash has not seen."""
        fd = self.open_fd()
        hasher, pos = self.hasher.copy(), self.hashed_upto
        while pos < self.meta.size:
            chunk = os.pread(fd, min(_READ_CHUNK, self.meta.size - pos), pos)
            if not chunk:
                break
            hasher.update(chunk)
            pos += len(chunk)
        return str(hasher.hexdigest())


def check_segment(size: int, cmd: p.Segment, data: bytes | bytearray) -> None:
    """Refuse a segment beyond the declared size or not matching its SHA-256 (when it has one).

    Beyond the size is 0x80, never 0x97: a sender reads 0x97 as "no room at the receiver".
    """
    end = cmd.offset + len(data)
    if cmd.offset > size or end > size:
        raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"segment [{cmd.offset}, {end}) beyond size")
    if cmd.checksum is not None and p.sha256_hex(data) != cmd.checksum:
        raise p.ProtocolError(p.UNSPECIFIED_ERROR, f"segment at {cmd.offset}: checksum mismatch")


def check_ranges(part: Partial, offset: int, end: int) -> None:
    """Refuse a segment that would make more than MAX_RANGES separate byte ranges."""
    if part.coverage.ranges_after(offset, end) > MAX_RANGES:
        raise p.ProtocolError(
            p.UNSPECIFIED_ERROR,
            f"segment at {offset}: more than {MAX_RANGES} separate byte ranges; fill the gaps",
        )


def meta_json(meta: p.FileMeta, **extra: Any) -> bytes:
    """A FileMeta as stored (init.json, .init.json)."""
    return json.dumps({**asdict(meta), **extra}).encode()


def write_init(fdir: Path, meta: p.FileMeta) -> None:
    """Record the declared meta of a partial durably."""
    durable.write_bytes(fdir / PARTIAL_DIR / "init.json", meta_json(meta))


def read_meta(path: Path) -> tuple[p.FileMeta, str | None]:
    """A stored FileMeta (and the SHA-256 recorded with it, if any); raises on anything wrong."""
    body = json.loads(path.read_bytes())
    if not isinstance(body, dict):
        raise ValueError(f"{path}: not an object")
    sha = body.pop("sha256", None)
    return p.parse_init(json.dumps(body).encode(), checksum_required=False), sha


def pwrite_all(fd: int, data: bytes | bytearray, offset: int) -> None:
    """Write all of `data` at `offset`, or raise the error that stopped it (ENOSPC).

    A short write (a disk filling up) is continued rather than its missing tail counted as held.
    """
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view, offset = view[written:], offset + written


def create_partial(fdir: Path, meta: p.FileMeta) -> Partial:
    """A new partial: its state files and an empty data file; no descriptor is kept open."""
    pdir = fdir / PARTIAL_DIR
    durable.make_dirs(pdir)
    durable.write_json(pdir / "coverage.json", [])
    write_init(fdir, meta)
    os.close(os.open(pdir / "data", os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640))
    durable.fsync_dir(fdir)
    return Partial(dir=fdir, meta=meta, coverage=Coverage())


def _done_record(fdir: Path) -> tuple[p.FileMeta, str | None] | None:
    try:
        return read_meta(fdir / DONE_INIT)
    except (OSError, ValueError, p.ProtocolError, RecursionError):
        return None


def same_as_done(fdir: Path, meta: p.FileMeta) -> bool:
    """True when `meta` is the first init of the complete transfer in `fdir`."""
    done = _done_record(fdir)
    if done is not None:
        return done[0] == meta
    try:  # held before the first init was kept: the manifest and the file must match
        manifest = json.loads((fdir / MANIFEST).read_bytes())
        return bool(manifest == meta.user_data and (fdir / meta.name).stat().st_size == meta.size)
    except (OSError, ValueError, RecursionError):
        return False


def unsigned_done(
    fdir: Path, meta: p.FileMeta, signed: Callable[[p.FileMeta], bool] | None
) -> bool:
    """A complete file whose first init the dock's key cannot verify (HMAC-era), same bytes."""
    done = _done_record(fdir)
    if signed is None or done is None:
        return False
    first = done[0]
    same = (first.size, first.checksum) == (meta.size, meta.checksum)
    return same and not signed(first)


def check_complete(fdir: Path, cmd: p.Fin) -> str:
    """The SHA-256 of a file already held, when the fin agrees with it; else refused."""
    done = _done_record(fdir)
    files = [f for f in fdir.iterdir() if f.name != MANIFEST and not f.name.startswith(".")]
    sizes = [f.stat().st_size for f in files]
    sha = done[1] if done is not None else None
    if sha is None and len(files) == 1:
        sha = _hash_file(files[0])
    if sizes != [cmd.size] or sha is None or cmd.checksum not in (None, sha):
        raise p.ProtocolError(p.UNSPECIFIED_ERROR, "fin differs from the file already held")
    return sha


def _hash_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
