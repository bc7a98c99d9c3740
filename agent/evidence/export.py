"""Evidence export (001 第十五条): a verified copy with a statement, registered in custody."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import DockConfig
from agent.durable import fsync_dir, write_bytes, write_json
from agent.evidence.custody import CustodyLog
from agent.evidence.index import ClipIndex, shard_name
from agent.evidence.lifecycle import has_local_copy
from agent.evidence.store import CHUNK, sha256_file

logger = logging.getLogger(__name__)

CLIP_REF_RE = re.compile(r"[0-9a-f]{8,64}")
Record = dict[str, Any]


class ExportRefused(Exception):
    """Bad usage (missing operator/approval/reason, malformed clip id): nothing was written."""


class ExportFailed(Exception):
    """The export could not be made (unknown or purged clip, copy mismatch); nothing kept."""


@dataclass(frozen=True)
class Request:
    """Who asks for a copy of which clip, where to, and on whose approval."""

    clip_ref: str
    out_dir: Path
    operator: str
    approval: str
    reason: str


@dataclass(frozen=True)
class ExportResult:
    """What an export produced."""

    copy: Path
    statement_txt: Path
    statement_json: Path
    entry: dict[str, Any]
    statement: dict[str, Any]


# ---- finding the clip -----------------------------------------------------------------------


def _archived_matches(index: ClipIndex, prefix: str) -> dict[str, Record]:
    """Latest archived versions of clips whose id starts with `prefix` (one shard holds them)."""
    try:
        data = (index.archive_dir / shard_name(prefix)).read_bytes()
    except FileNotFoundError:
        return {}
    found: dict[str, Record] = {}
    for raw in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and str(record.get("clip_id", "")).startswith(prefix):
            found[record["clip_id"]] = record
    return found


def resolve_clip(index: ClipIndex, ref: str) -> Record:
    """The record of a clip given its sha256 or a unique prefix of >= 8 hex digits."""
    prefix = ref.strip().lower()
    if not CLIP_REF_RE.fullmatch(prefix):
        raise ExportRefused(f"{ref!r}: expected a clip sha256 or a prefix of >= 8 hex digits")
    if len(prefix) == 64:
        record = index.get(prefix)
        if record is None:
            raise ExportFailed(f"unknown clip {prefix}")
        return record
    matches = _archived_matches(index, prefix)
    matches.update({r["clip_id"]: r for r in index.active() if r["clip_id"].startswith(prefix)})
    if not matches:
        raise ExportFailed(f"unknown clip {prefix}")
    if len(matches) > 1:
        raise ExportFailed(f"clip id {prefix} is ambiguous: {', '.join(sorted(matches))}")
    return next(iter(matches.values()))


# ---- the copy -------------------------------------------------------------------------------


def _copy_hashing(src: Path, tmp: Path) -> str:
    """Copy `src` (read only) to a new `tmp`, fsynced; the SHA-256 of what was read."""
    h = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o440)
    try:
        with open(src, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return h.hexdigest()


def copy_verified(src: Path, dest: Path, sha256: str) -> None:
    """Copy, fsync, place without overwriting, then re-hash the copy from disk."""
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        read = _copy_hashing(src, tmp)
        if read != sha256:
            raise ExportFailed(f"{src}: the stored clip hashes {read}, not the indexed {sha256}")
        os.link(tmp, dest)  # refuses to replace an existing file
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)
    if sha256_file(dest) != sha256:
        dest.unlink(missing_ok=True)
        raise ExportFailed(f"{dest}: the copy does not hash to {sha256}; removed")


# ---- the statement --------------------------------------------------------------------------


def build_statement(
    record: Record, req: Request, copy: Path, entry: dict[str, Any], dock_id: str
) -> dict[str, Any]:
    """The statement of an evidence copy: what, recorded by whom, made by, extracted by, when."""
    return {
        "statement": "evidence copy",
        "clip_id": record["clip_id"],
        "file_name": record.get("file_name"),
        "media_type": record.get("media_type"),
        "sha256": record["sha256"],
        "size": record.get("size"),
        "device_id": record.get("device_id"),
        "officer": {k: record.get(k) for k in ("officer_id", "officer_name", "unit_no")},
        "recorded_start": record.get("recorded_start"),
        "recorded_end": record.get("recorded_end"),
        "recorded_tz": record.get("recorded_tz"),
        "clock_offset_s": record.get("clock_offset_s"),
        "maker": {
            "dock_id": record.get("dock_id"),
            "department": record.get("department"),
            "offloaded_at": record.get("offloaded_at"),
            "custody_seq": record.get("custody_seq"),
            "custody_hash": record.get("custody_hash"),
        },
        "extractor": req.operator,
        "extracted_at": entry["ts"],
        "approval": req.approval,
        "reason": req.reason,
        "dock_id": dock_id,
        "copy": str(copy),
        "custody": {"event": entry["event"], "seq": entry["seq"], "hash": entry["hash"]},
    }


def statement_text(st: dict[str, Any]) -> str:
    """The statement as plain UTF-8 text, bilingual labels, one fact a line."""
    officer, maker = st["officer"], st["maker"]
    lines = [
        "证据复制说明 / Evidence copy statement",
        f"文件 File: {st['file_name']} ({st['media_type']}, {st['size']} bytes)",
        f"SHA-256: {st['sha256']}",
        f"执法记录仪 Device: {st['device_id']}",
        f"执法人员 Officer: {officer['officer_id']} {officer['officer_name'] or ''} "
        f"(unit {officer['unit_no'] or '-'})",
        f"录制时间 Recorded: {st['recorded_start']} .. {st['recorded_end']} "
        f"({st['recorded_tz']}, clock offset {st['clock_offset_s']} s)",
        f"制作 Made by: {maker['department'] or '-'} / dock {maker['dock_id']}, "
        f"offloaded {maker['offloaded_at']} (custody seq {maker['custody_seq']})",
        f"提取人 Extracted by: {st['extractor']}",
        f"提取时间 Extracted at: {st['extracted_at']}",
        f"审批 Approval: {st['approval']}",
        f"事由 Reason: {st['reason']}",
        f"提取设备 Dock: {st['dock_id']}",
        f"副本 Copy: {st['copy']} (re-hashed after writing: matches)",
        f"保管链 Custody: {st['custody']['event']} seq {st['custody']['seq']} "
        f"hash {st['custody']['hash']}",
    ]
    return "\n".join(lines) + "\n"


# ---- the export -----------------------------------------------------------------------------


def check_request(req: Request) -> None:
    """Refuse a request missing its operator, approval or reason (before anything is touched)."""
    blank = [n for n in ("operator", "approval", "reason") if not getattr(req, n).strip()]
    if blank:
        flags = ", ".join(f"--{n}" for n in blank)
        raise ExportRefused(f"refused: {flags} required (viewing and copying need an approval)")


def _targets(record: Record, out_dir: Path) -> tuple[Path, Path, Path]:
    name = Path(str(record.get("file_name") or record["clip_id"])).name
    paths = (
        out_dir / name,
        out_dir / f"{name}.statement.txt",
        out_dir / f"{name}.statement.json",
    )
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise ExportFailed(f"{', '.join(taken)}: already exists; choose another --out")
    return paths


def _source(record: Record) -> Path:
    if not has_local_copy(record):
        raise ExportFailed(
            f"clip {record['clip_id'][:12]}: the local copy was purged (purged_at "
            f"{record.get('purged_at')}); request it from the central evidence server"
        )
    src = Path(str(record.get("local_path") or ""))
    if not src.is_file():
        raise ExportFailed(f"clip {record['clip_id'][:12]}: no local copy at {src}")
    return src


def _register(
    custody: CustodyLog, record: Record, req: Request, copy: Path, statement: Path
) -> dict[str, Any]:
    """The `exported` custody entry: the access register's line for this copy."""
    return custody.append(
        "exported",
        clip=record["clip_id"],
        sha256=record["sha256"],
        size=record.get("size"),
        device_id=record.get("device_id"),
        operator=req.operator,
        approval=req.approval,
        reason=req.reason,
        out=str(copy),
        statement=str(statement),
    )


def export_clip(
    index: ClipIndex, custody: CustodyLog, cfg: DockConfig, req: Request
) -> ExportResult:
    """Copy a stored clip for evidence, verify it, register it in custody, write its statement."""
    check_request(req)
    record = resolve_clip(index, req.clip_ref)
    src = _source(record)
    req.out_dir.mkdir(parents=True, exist_ok=True)
    copy, txt, js = _targets(record, req.out_dir)
    copy_verified(src, copy, record["sha256"])
    try:
        entry = _register(custody, record, req, copy, js)
    except BaseException:
        copy.unlink(missing_ok=True)  # an unregistered copy must not exist
        raise
    st = build_statement(record, req, copy, entry, cfg.dock.id)
    write_json(js, st)
    write_bytes(txt, statement_text(st).encode("utf-8"))
    logger.info(
        "clip %s exported to %s by %s (approval %s)",
        record["clip_id"][:12],
        copy,
        req.operator,
        req.approval,
        extra={"DOCK_ID": cfg.dock.id, "CLIP_SHA256": record["clip_id"]},
    )
    return ExportResult(copy, txt, js, entry, st)
