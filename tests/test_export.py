"""Evidence export: a verified copy, its statement, and the custody entry that registers it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.cli import main
from agent.config import DockConfig, load_config
from agent.evidence.custody import CustodyLog, iter_entries, verify_chain
from agent.evidence.index import ClipIndex
from agent.evidence.record import Docking, StartTime, new_record
from agent.evidence.store import sha256_file
from firmware_interface.base import ClipEntry, Identity

TZ = ZoneInfo("Asia/Shanghai")
DEPARTMENT = "水政监察大队"


@dataclass
class Dock:
    """A dock's data directory with a real index, custody log and evidence files."""

    cfg: DockConfig
    config: Path
    index: ClipIndex
    custody: CustodyLog

    def clip(self, name: str, data: bytes, **changes: Any) -> dict[str, Any]:
        """Store `data` as an offloaded clip (file fsynced, custody logged, indexed)."""
        return stored_clip(self, name, data, **changes)

    def entries(self) -> list[dict[str, Any]]:
        """The custody log as it lies on disk."""
        return list(iter_entries(self.cfg.data_dir / "custody.jsonl"))


def write_config(tmp: Path, extra: str = "") -> Path:
    """A dock configuration file under `tmp`."""
    path = tmp / "dock-agent.toml"
    path.write_text(
        f'[dock]\nid = "dock-07"\ndepartment = "{DEPARTMENT}"\n'
        f'data_dir = "{tmp / "data"}"\n{extra}',
        encoding="utf-8",
    )
    return path


def open_dock(tmp: Path, extra: str = "") -> Dock:
    """A fresh dock data directory for `tmp`."""
    config = write_config(tmp, extra)
    cfg = load_config(str(config))
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Dock(cfg, config, ClipIndex(cfg.data_dir), CustodyLog(cfg.data_dir / "custody.jsonl"))


def stored_clip(dock: Dock, name: str, data: bytes, **changes: Any) -> dict[str, Any]:
    """A clip as the offloader leaves it: durable file, clip_offloaded entry, index row."""
    path = dock.cfg.data_dir / "evidence" / "ZFY0012345" / "2026-11-21" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    sha = sha256_file(path)
    entry = dock.custody.append(
        "clip_offloaded", device_id="ZFY0012345", file=f"DCIM/{name}", sha256=sha, size=len(data)
    )
    identity = Identity("ZFY0012345", officer_id="012345", officer_name="张三", unit_no="410000")
    docking = Docking("dk-1", 1, identity, 1.5, TZ, dock.cfg.dock.id, DEPARTMENT)
    clip = ClipEntry(f"DCIM/{name}", len(data), 1_700_000_000.0, "video")
    start = StartTime(datetime(2026, 11, 21, 1, 0, 2, tzinfo=UTC), "name")
    record = new_record(docking, clip, sha, len(data), path, start, entry)
    record.update(changes)
    dock.index.put(record)
    return record


@pytest.fixture
def dock(tmp_path: Path) -> Iterator[Dock]:
    d = open_dock(tmp_path)
    yield d
    d.custody.close()
    d.index.close()


def export_args(dock: Dock, clip_ref: str, out: Path, **over: str) -> list[str]:
    """The export command line, with any option overridden (an empty value drops it)."""
    opts = {"--operator": "李四", "--approval": "审批-2026-117", "--reason": "投诉核查", **over}
    args = ["export", clip_ref, "--out", str(out), "-c", str(dock.config)]
    for key, value in opts.items():
        if value != "":
            args += [key, value]
    return args


def test_export_writes_copy_statement_and_custody_entry(dock: Dock, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    record = dock.clip("ZFY0012345_012345_20261121090002_0001.MP4", data)
    original = Path(record["local_path"])
    before = original.stat()
    out = tmp_path / "out"

    assert main(export_args(dock, record["clip_id"][:10], out)) == 0

    copy = out / record["file_name"]
    assert copy.read_bytes() == data
    assert original.read_bytes() == data and original.stat().st_mtime_ns == before.st_mtime_ns
    entry = dock.entries()[-1]
    assert entry["event"] == "exported"
    assert entry["operator"] == "李四" and entry["approval"] == "审批-2026-117"
    assert entry["reason"] == "投诉核查" and entry["clip"] == record["clip_id"]
    assert entry["sha256"] == record["sha256"] and entry["out"] == str(copy)
    st = json.loads((out / f"{record['file_name']}.statement.json").read_text(encoding="utf-8"))
    assert st["sha256"] == record["sha256"] and st["size"] == len(data)
    assert st["custody"] == {"event": "exported", "seq": entry["seq"], "hash": entry["hash"]}
    assert st["extractor"] == "李四" and st["extracted_at"] == entry["ts"]
    assert st["maker"]["department"] == DEPARTMENT and st["maker"]["dock_id"] == "dock-07"
    assert st["officer"]["officer_name"] == "张三" and st["device_id"] == "ZFY0012345"
    assert st["recorded_start"] == record["recorded_start"]
    text = (out / f"{record['file_name']}.statement.txt").read_text(encoding="utf-8")
    assert "提取人 Extracted by: 李四" in text and record["sha256"] in text
    assert verify_chain(dock.cfg.data_dir / "custody.jsonl") == []
    assert main(["verify", "-c", str(dock.config)]) == 0


@pytest.mark.parametrize("missing", ["--approval", "--operator", "--reason"])
def test_export_without_approval_operator_or_reason_is_refused(
    dock: Dock, tmp_path: Path, missing: str, capsys: pytest.CaptureFixture[str]
) -> None:
    record = dock.clip("A.MP4", b"evidence bytes")
    seq = dock.custody.head()[0]
    out = tmp_path / "out"

    assert main(export_args(dock, record["clip_id"], out, **{missing: ""})) == 2
    assert main(export_args(dock, record["clip_id"], out, **{missing: "   "})) == 2

    assert missing in capsys.readouterr().err
    assert not out.exists()
    assert dock.custody.head()[0] == seq


def test_unknown_clip_exits_1(
    dock: Dock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dock.clip("A.MP4", b"evidence bytes")
    assert main(export_args(dock, "00000000deadbeef", tmp_path / "out")) == 1
    assert "unknown clip" in capsys.readouterr().err


def test_short_clip_prefix_is_bad_usage(dock: Dock, tmp_path: Path) -> None:
    record = dock.clip("A.MP4", b"evidence bytes")
    assert main(export_args(dock, record["clip_id"][:6], tmp_path / "out")) == 2


def test_purged_clip_exits_1_saying_so(
    dock: Dock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = dock.clip("A.MP4", b"evidence bytes", state="purged")
    Path(record["local_path"]).unlink()
    assert main(export_args(dock, record["clip_id"], tmp_path / "out")) == 1
    assert "purged" in capsys.readouterr().err
    assert not (tmp_path / "out" / "A.MP4").exists()


def test_existing_copy_is_never_overwritten(dock: Dock, tmp_path: Path) -> None:
    record = dock.clip("A.MP4", b"evidence bytes")
    out = tmp_path / "out"
    out.mkdir()
    (out / "A.MP4").write_bytes(b"something else")
    seq = dock.custody.head()[0]
    assert main(export_args(dock, record["clip_id"], out)) == 1
    assert (out / "A.MP4").read_bytes() == b"something else"
    assert dock.custody.head()[0] == seq


def test_a_tampered_store_copy_is_not_exported(dock: Dock, tmp_path: Path) -> None:
    record = dock.clip("A.MP4", b"evidence bytes")
    path = Path(record["local_path"])
    path.chmod(0o640)
    path.write_bytes(b"evidence bytez")
    assert main(export_args(dock, record["clip_id"], tmp_path / "out")) == 1
    assert not (tmp_path / "out" / "A.MP4").exists()
    assert dock.entries()[-1]["event"] == "clip_offloaded"
