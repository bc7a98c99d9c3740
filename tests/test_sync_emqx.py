"""The dock syncs to EMQX (tests/emqx/fixture.py behind a real Mosquitto): every clip, its manifest."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.evidence.custody import iter_entries
from agent.evidence.index import ClipIndex
from agent.sync.queue import Backoff
from firmware_interface import simkit
from tests.broker import Broker, free_port, mosquitto_binary, running_broker
from tests.dock import config_toml, dock_config, running, wait_for
from tests.emqx.fixture import EmqxFileTransfer, Options
from tests.test_mqtt_tls import OPENSSL_CNF, _make_ca, _make_cert, tls_listener

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

SCALE = 0.01  # real seconds per EMQX second
FIN_TIMEOUT_S = 330 * SCALE
CLIENT = "dock-test"


TLS_PORTS: dict[int, int] = {}  # broker's plain port (EMQX's side) -> the docks' TLS port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, the broker's certificate and a dock's client certificate (mutual TLS)."""
    d = tmp_path_factory.mktemp("pki")
    (d / "openssl.cnf").write_text(OPENSSL_CNF)
    _make_ca(d, "ca")
    for name in ("server", "client"):
        _make_cert(d, name, name)
    (d / "client.key").chmod(0o600)
    return d


@pytest.fixture
def broker(tmp_path: Path, pki: Path) -> Iterator[Broker]:
    """EMQX's side on the plain port; docks on a mutual-TLS listener (SPEC 11: an EMQX upstream
    frees recorders only over an authenticated connection)."""
    tls = free_port()
    with running_broker(tmp_path / "broker", extra_config=tls_listener(pki, tls, mutual=True)) as b:
        TLS_PORTS[b.port] = tls
        yield b


def emqx_mqtt(broker: Broker, pki: Path, **more: Any) -> dict[str, Any]:
    """The dock's [mqtt] for an EMQX upstream: TLS, a client certificate, no central key."""
    return {
        "host": broker.host,
        "port": TLS_PORTS[broker.port],
        "upstream": "emqx",
        "tls_ca": str(pki / "ca.crt"),
        "tls_cert": str(pki / "client.crt"),
        "tls_key": str(pki / "client.key"),
        "central_key_file": "",
        **more,
    }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def exported_clips(emqx: EmqxFileTransfer) -> dict[str, dict]:
    """clip sha256 -> its full manifest, for clips whose both transfers EMQX exported."""
    by_id = {e.file_id: e for e in emqx.exports if e.client == CLIENT}
    out = {}
    for e in by_id.values():
        manifest_id = (e.user_data or {}).get("manifest_sha256")
        if manifest_id in by_id and e.sha256 == e.file_id:
            out[e.file_id] = json.loads(by_id[manifest_id].path.read_bytes())
    return out


def recorder_clips(bay: Path, count: int, mib: int) -> list[Path]:
    """`count` random clips of `mib` MiB on a simulated recorder in `bay`, docked."""
    now = datetime.now()
    rec = simkit.SimRecorder(battery_pct=95, clips=[])
    out = []
    for i in range(count):
        when = now - timedelta(minutes=20 - i)
        path = (
            bay
            / "DCIM"
            / "100MEDIA"
            / f"{rec.device_id}_{rec.officer_id}_{when:%Y%m%d%H%M%S}_{i:04d}.MP4"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(mib * 2**20))
        out.append(path)
    simkit.dock(bay, rec)
    return out


def test_the_dock_syncs_every_clip_to_emqx_and_frees_the_recorder(
    tmp_path: Path, broker: Broker, pki: Path
) -> None:
    options = Options(time_scale=SCALE, assembly_delay=30, s3_metadata_limit=2048)
    mqtt = emqx_mqtt(broker, pki, fin_timeout_s=FIN_TIMEOUT_S)
    cfg = dock_config(tmp_path, mqtt=mqtt)
    start = datetime.now() - timedelta(hours=2)
    rec = simkit.SimRecorder(clips=simkit.shift(start, [2, 2, 1]))
    originals = simkit.build(tmp_path / "bay1", rec)
    with EmqxFileTransfer(broker, tmp_path / "emqx", options) as emqx, running(cfg) as (daemon, _v):
        wait_for(lambda: len(exported_clips(emqx)) == len(originals), 60, "clips at EMQX")
        wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
        records = {r["sha256"]: r for r in daemon.services.index.iter_all()}
    got = exported_clips(emqx)
    assert sorted(got) == sorted(records)
    assert emqx.conflicts == [] and emqx.unheard == []
    for clip_id, manifest in got.items():
        export = emqx.export(CLIENT, clip_id)
        assert export is not None and export.name == records[clip_id]["file_name"]
        assert manifest["sha256"] == clip_id and manifest["file_name"] == export.name
        assert export.user_data["custody_seq"] == manifest["custody_seq"]
        assert export.s3_metadata_bytes <= 2048
    assert {r["state"] for r in records.values()} == {"synced"}


def test_no_room_at_emqx_pauses_the_queue_and_keeps_everything(
    tmp_path: Path, broker: Broker, pki: Path
) -> None:
    options = Options(time_scale=SCALE, disk_error="enospc")
    mqtt = emqx_mqtt(broker, pki, fin_timeout_s=FIN_TIMEOUT_S)
    cfg = dock_config(tmp_path, mqtt=mqtt)
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(
        tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1, 1]))
    )
    with (
        EmqxFileTransfer(broker, tmp_path / "emqx", options) as emqx,
        running(cfg, sync_backoff=Backoff(1.0)) as (daemon, views),
    ):
        index = daemon.services.index

        def failed(custody: bool = False) -> list[str]:
            """Clips' sync_failed alerts (with `custody`, the chain's too: SPEC 8.1)."""
            return [
                a.message
                for a in views.alerts
                if a.code == "sync_failed" and (custody or a.fields.get("kind") != "custody")
            ]

        wait_for(lambda: len(failed()) >= 3, 60, "sync_failed alerts")
        assert all("central has no room" in m and "enospc" in m for m in failed()), failed()
        pauses = [m.rsplit("sync paused ", 1)[1] for m in failed()[:3]]
        assert pauses == ["1 s", "2 s", "4 s"], "the whole queue waits, doubling"
        tries, alerts = len(emqx.inits), len(failed(custody=True))
        assert tries <= alerts + 1, "one init per pause, not one per clip per try"
        assert {r["state"] for r in index.iter_all()} == {"offloaded"}
        assert all(p.exists() for p in originals)

        emqx.options.disk_error = None
        wait_for(lambda: {r["state"] for r in index.iter_all()} == {"synced"}, 60, "synced")
        wait_for(lambda: not any(p.exists() for p in originals), 30, "recorder freed")
    assert len(exported_clips(emqx)) == len(originals) and emqx.conflicts == []


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(config)],
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _mid_clip(data: Path, clips: set[str]) -> set[str]:
    """The clips whose transfer has acknowledged segments saved: the dock is mid-clip.

    Only clips: each clip's manifest goes as a file of its own, one segment long, and a kill
    during it is no kill mid-clip (a test that killed only manifests proved nothing of clips).
    """
    found = set()
    for f in (data / "transfer").glob("*.json"):
        try:
            saved = json.loads(f.read_text())
            if saved.get("acked") and saved["key"]["file_id"] in clips:
                found.add(saved["key"]["file_id"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return found


def test_kill9_mid_clip_and_restart_completes_every_clip_without_conflict(
    tmp_path: Path, broker: Broker, pki: Path
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    originals = recorder_clips(tmp_path / "bay1", 5, 6)
    expected = {sha(p) for p in originals}
    cfg = dock_config(tmp_path, mqtt=emqx_mqtt(broker, pki))
    config = tmp_path / "dock.toml"
    extra = (
        f"fin_timeout_s = {FIN_TIMEOUT_S}\nsegment_bytes = 131072\n"
        "rate_limit_bytes_per_s = 8388608\n"  # ~1 s per clip: kills land mid-clip
    )
    config.write_text(config_toml(cfg).replace("[mqtt]\n", "[mqtt]\n" + extra, 1))
    log = tmp_path / "run.log"
    options = Options(time_scale=SCALE, assembly_delay=50)
    with EmqxFileTransfer(broker, tmp_path / "emqx", options) as emqx:
        agent = _start(config, log)
        try:
            cut: set[str] = set()  # clips a kill landed in the middle of
            for _ in range(3):
                wait_for(
                    lambda: _mid_clip(cfg.data_dir, expected),
                    60,
                    f"a clip in flight (seed {seed})",
                )
                time.sleep(rng.uniform(0.0, 0.6))
                agent.send_signal(signal.SIGKILL)
                agent.wait(10)
                cut |= _mid_clip(cfg.data_dir, expected)  # the dead dock's saved state
                agent = _start(config, log)
            wait_for(
                lambda: set(exported_clips(emqx)) == expected,
                120,
                f"every clip and manifest at EMQX (seed {seed}); log:\n{log.read_text()[-3000:]}",
            )
            wait_for(lambda: not any(p.exists() for p in originals), 60, "recorder freed")
        finally:
            agent.terminate()
            agent.wait(30)
    assert emqx.conflicts == [], f"seed {seed}: {[c.payload[:200] for c in emqx.conflicts]}"
    for clip_id in expected:
        export = emqx.export(CLIENT, clip_id)
        assert export is not None and export.sha256 == clip_id
    assert cut, f"seed {seed}: no kill landed mid-clip (each came after the clip was done)"
    for clip_id in cut:  # resumed with the same init, which EMQX took without a conflict
        inits = [i for i in emqx.inits if i.file_id == clip_id]
        assert len(inits) > 1, f"seed {seed}: {clip_id[:12]} was cut, its init not sent again"
    index = ClipIndex(cfg.data_dir)
    states = {r["sha256"]: r["state"] for r in index.iter_all()}
    index.close()
    assert states == dict.fromkeys(expected, "synced")
    synced = [
        e for e in iter_entries(cfg.data_dir / "custody.jsonl") if e["event"] == "clip_synced"
    ]
    assert sorted(e["sha256"] for e in synced) == sorted(expected), "each clip synced once"
    assert "Traceback" not in log.read_text()


def test_a_long_fin_wait_keeps_the_sync_thread_healthy(
    tmp_path: Path, broker: Broker, pki: Path
) -> None:
    options = Options(time_scale=SCALE, assembly_delay=300)  # 3 s of assembly per fin
    mqtt = emqx_mqtt(broker, pki, fin_timeout_s=FIN_TIMEOUT_S)
    cfg = dock_config(tmp_path, mqtt=mqtt)
    start = datetime.now() - timedelta(hours=1)
    originals = simkit.build(tmp_path / "bay1", simkit.SimRecorder(clips=simkit.shift(start, [1])))
    with EmqxFileTransfer(broker, tmp_path / "emqx", options) as emqx, running(cfg) as (daemon, _v):
        assert daemon.parts is not None
        sync = daemon.parts.sync
        samples: list[bool] = []
        deadline = time.monotonic() + 60
        while len(exported_clips(emqx)) < len(originals) and time.monotonic() < deadline:
            if sync.busy:
                samples.append(sync.healthy(1.0))  # the watchdog's check, with a 1 s stall limit
            time.sleep(0.05)
    assert len(exported_clips(emqx)) == len(originals)
    assert len(samples) > 40 and all(samples), "busy for seconds in fins, never called hung"
