"""The receiver's store without a broker: escaped names, byte ranges, descriptors, limits, config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.schema import ConfigError
from agent.transfer import protocol as p
from agent.transfer.receiver.config import parse_receiver_config
from agent.transfer.receiver.coverage import MAX_RANGES, Coverage
from agent.transfer.receiver.escape import escape_file_id, is_transfer_dir, unescape_dir
from agent.transfer.receiver.partials import TransferStore
from agent.transfer.receiver.quota import InProgress


@pytest.mark.parametrize(
    "file_id",
    ["ab" * 32, "my-file-001", ".", "..", "...", ".hidden", "a\\b", "a:b", "100%", "~x",
     "录像 1.mp4", "\x01\x7f", "\u2028", "x" * 255, "é" * 128, " ", "%2E"],
)  # fmt: skip
def test_escaped_file_ids_are_one_safe_entry_and_come_back(tmp_path: Path, file_id: str) -> None:
    name = escape_file_id(file_id)
    assert name not in (".", "..") and not name.startswith(".") and "/" not in name
    assert len(name.encode()) <= 255 and "\x00" not in name
    assert is_transfer_dir(name)
    if not name.startswith("~"):
        assert unescape_dir(name) == file_id
    (tmp_path / name).mkdir()  # one real directory entry, directly under tmp_path
    assert [d.name for d in tmp_path.iterdir()] == [name]


def test_distinct_file_ids_get_distinct_names() -> None:
    ids = ["a:b", "a%3Ab", "a%3Ab".lower(), ".", "%2E", "~" + "0" * 64, "é" * 128, "é" * 127 + "e"]
    assert len({escape_file_id(i) for i in ids}) == len(ids)
    assert escape_file_id("ab" * 32) == "ab" * 32, "a dock's SHA-256 file id is its own name"
    assert not is_transfer_dir(".partial") and not is_transfer_dir("a%2")


def test_coverage_merges_counts_and_bounds() -> None:
    cov = Coverage([(10, 20), (30, 40)])
    assert cov.ranges_after(20, 30) == 1 and cov.ranges_after(50, 60) == 3
    cov.add(20, 30)
    assert cov.to_json() == [[10, 40]] and cov.held() == 30 and len(cov) == 1
    assert cov.covers(15, 40) and not cov.covers(5, 15) and cov.covers(7, 7)
    scattered = Coverage()
    for off in range(0, 2 * MAX_RANGES, 2):
        scattered.add(off, off + 1)
    assert len(scattered) == MAX_RANGES and scattered.held() == MAX_RANGES
    for off in range(1, 2 * MAX_RANGES, 2):
        scattered.add(off, off + 1)
    assert scattered.to_json() == [[0, 2 * MAX_RANGES]]


def test_lru_partials_hold_at_most_max_open_descriptors_and_still_complete(
    tmp_path: Path,
) -> None:
    store = TransferStore(tmp_path, InProgress(tmp_path, 1000), max_open=4)
    fds = len(os.listdir("/proc/self/fd"))
    files = [os.urandom(100 + i) for i in range(40)]
    for data in files:
        fid = p.sha256_hex(data)
        store.begin("dock", p.Init(fid, p.FileMeta("f.bin", len(data), fid)))
        store.write_segment("dock", p.Segment(fid, 0, None), data[:50])
    assert len(os.listdir("/proc/self/fd")) <= fds + 4
    for data in files:  # each partial read back from disk, reopened, finished
        fid = p.sha256_hex(data)
        store.write_segment("dock", p.Segment(fid, 50, None), data[50:])
        assert store.finish("dock", p.Fin(fid, len(data), None)) == fid
        assert (tmp_path / "dock" / fid / "f.bin").read_bytes() == data
    store.close()
    assert len(os.listdir("/proc/self/fd")) <= fds


def test_in_progress_counts_what_is_on_disk_after_a_restart(tmp_path: Path) -> None:
    store = TransferStore(tmp_path, InProgress(tmp_path, 2))
    for i in range(2):
        fid = p.sha256_hex(b"%d" % i)
        store.begin("dock", p.Init(fid, p.FileMeta("f", 5, fid)))
    store.close()
    again = TransferStore(tmp_path, InProgress(tmp_path, 2))
    third = p.sha256_hex(b"third")
    with pytest.raises(p.ProtocolError) as exc:
        again.begin("dock", p.Init(third, p.FileMeta("f", 5, third)))
    assert exc.value.reason_code == p.QUOTA_EXCEEDED
    again.begin("dock", p.Init(p.sha256_hex(b"0"), p.FileMeta("f", 5, p.sha256_hex(b"0"))))
    again.begin("other", p.Init(third, p.FileMeta("f", 5, third)))  # the limit is per client


def test_receiver_config_keys_of_spec_7_1_and_11() -> None:
    cfg = parse_receiver_config({"receiver": {"store_dir": "/srv/e"}})
    section = cfg.receiver
    assert (section.unidentified, section.dock_keys_dir) == ("refuse", "")
    assert (section.max_file_bytes, section.max_partials_per_client) == (64 << 30, 16)
    with pytest.raises(ConfigError) as exc:
        parse_receiver_config(
            {
                "receiver": {
                    "store_dir": "/srv/e",
                    "unidentified": "keep",
                    "max_file_bytes": 10**30,
                    "max_partials_per_client": 0,
                }
            }
        )
    text = "\n".join(exc.value.problems)
    assert "receiver.unidentified = 'keep': expected one of refuse, store" in text
    assert "receiver.max_file_bytes" in text and "receiver.max_partials_per_client" in text


def test_dock_keys_from_a_directory_or_from_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.transfer.receiver.trustdir import DockKeys
    from agent.trust.keys import fingerprint, write_public

    one, two = Ed25519PrivateKey.generate().public_key(), Ed25519PrivateKey.generate().public_key()
    write_public(tmp_path / "dock-01.pub", one, "dock-01")
    write_public(tmp_path / "keys_dock-02.pub", two, "dock-02")
    (tmp_path / "dock-03.pub").write_text("ssh-rsa AAAA dock-03\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)

    def fp(keys: DockKeys, client: str) -> str | None:
        key = keys.key(client)
        return None if key is None else fingerprint(key)

    assert fp(DockKeys(tmp_path), "dock-01") == fingerprint(one)
    assert DockKeys(tmp_path).key("../dock-01") is None and DockKeys(tmp_path).key("x") is None
    assert DockKeys(tmp_path).key("dock-03") is None, "not an Ed25519 key: no key"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert fp(DockKeys("keys"), "dock-02") == fingerprint(two)
    assert fp(DockKeys(str(tmp_path)), "dock-01") == fingerprint(one)


def test_receiver_unit_is_notify_with_a_watchdog() -> None:
    unit = (
        Path(__file__).resolve().parent.parent / "systemd/dock-agent-receiver.service"
    ).read_text()
    assert (
        "\nType=notify\n" in unit and "\nWatchdogSec=" in unit and "\nNotifyAccess=main\n" in unit
    )
