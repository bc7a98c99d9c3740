"""`dock-agent demo`: a broker, the central receiver and a dock with two simulated recorders."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import DockConfig, parse_config
from agent.daemon.runtime import Daemon
from agent.daemon.wiring import assemble
from agent.demo.site import Site, make_site
from agent.evidence.custody import verify_chain
from agent.evidence.lifecycle import acked_upstream
from agent.transfer.receiver.config import parse_receiver_config
from firmware_interface import simkit

TIMEOUT_S = 180.0
DOCK_ID = "demo-dock"


@dataclass
class Scene:
    """Where the demo lives and what it docks."""

    root: Path
    recorders: dict[int, simkit.SimRecorder]

    @property
    def store(self) -> Path:
        """The central receiver's store."""
        return self.root / "central"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto() -> str:
    """The mosquitto binary, or a clear error saying how to get it."""
    found = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if not found:
        raise RuntimeError(
            "mosquitto is not installed: run ./scripts/setup.sh (or apt-get install mosquitto)"
        )
    return found


@contextmanager
def broker(site: Site) -> Iterator[int]:
    """A private Mosquitto started from the site configuration (SPEC 11), never the system's."""
    # A session of its own: Ctrl-C at the terminal reaches the demo, which stops the dock and
    # the receiver before the broker, not the broker first (the dock would log a lost link).
    with open(site.root / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen(
            [mosquitto(), "-c", str(site.conf)], stdout=log, stderr=log, start_new_session=True
        )
    try:
        _wait(lambda: _listening(site.port), 10, "mosquitto to listen")
        yield site.port
    finally:
        proc.terminate()
        proc.wait(10)


def site_mqtt(site: Site, user: str) -> str:
    """The `[mqtt]` lines of a client of the site: TLS to its CA, its user name and password."""
    return (
        f'host = "127.0.0.1"\nport = {site.port}\ntls_ca = "{site.ca}"\n'
        f'username = "{user}"\npassword_file = "{site.password_files[user]}"\n'
    )


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


def _wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def officer_a(now: datetime) -> simkit.SimRecorder:
    """A shift with a late clip, a 90 s gap after low battery, a marked clip and drift."""
    late = now - timedelta(hours=30)
    shift = now - timedelta(hours=2)
    clips = [
        simkit.SimClip(late, 3),
        simkit.SimClip(shift, 3),
        simkit.SimClip(shift + timedelta(seconds=3), 2),
        simkit.SimClip(shift + timedelta(seconds=95), 3),
        simkit.SimClip(shift + timedelta(minutes=5), 1, "JPG"),
    ]
    stop = shift + timedelta(seconds=5)
    events = [
        {"ts": stop.isoformat(timespec="seconds"), "event": "rec_stop", "reason": "low_battery"},
        {"ts": (shift + timedelta(seconds=96)).isoformat(timespec="seconds"), "event": "mark"},
    ]
    return simkit.SimRecorder(
        "ZFY0012345",
        "012345",
        "张三",
        battery_pct=93,
        clock_offset_s=47.0,
        clips=clips,
        events=events,
    )


def officer_b(now: datetime) -> simkit.SimRecorder:
    """A short shift on a recorder that still needs a little charge."""
    start = now - timedelta(hours=1)
    clips = [
        simkit.SimClip(start, 2),
        simkit.SimClip(start + timedelta(seconds=2), 2),
        simkit.SimClip(start + timedelta(minutes=3), 1, "WAV"),
    ]
    return simkit.SimRecorder(
        "ZFY0067890", "067890", "李四", battery_pct=86, charge_pct_per_min=60.0, clips=clips
    )


def page_port() -> int:
    """8080 (the dock's default) when free, else any free loopback port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
        except OSError:
            return free_port()
    return 8080


def page_url(daemon: Daemon) -> str | None:
    """The status page's address, once the daemon serves it."""
    from agent.ui.server import PageServer

    return next((p.url for p in daemon.plugins if isinstance(p, PageServer)), None)


def dock_config(scene: Scene, site: Site, ui_port: int = 0) -> DockConfig:
    """The demo dock: two simulated bays, the site broker (TLS, password), its keys, no NTP.

    Also written to {root}/dock.toml so that the other commands can be tried on the result.
    """
    bays = "".join(
        f'[[bay]]\nnumber = {n}\nsim_dir = "{scene.root / f"bay{n}"}"\n\n' for n in scene.recorders
    )
    text = (
        f'[dock]\nid = "{DOCK_ID}"\ndepartment = "水政监察大队"\n'
        f'data_dir = "{scene.root / "dock"}"\n\n{bays}'
        "[policy]\n# a demo machine may have no NTP: set recorder clocks anyway\n"
        "require_synced_clock = false\ndisk_reserve_bytes = 0\n\n"
        f"[mqtt]\n{site_mqtt(site, DOCK_ID)}"
        f'signing_key_file = "{site.dock_key_files[DOCK_ID]}"\n'
        f'central_key_file = "{site.central_pub}"\n\n'
        f'[ui]\nlisten = "127.0.0.1:{ui_port}"\n'
    )
    (scene.root / "dock.toml").write_text(text, encoding="utf-8")
    return parse_config(tomllib.loads(text))


def build_scene(root: Path) -> Scene:
    """Two recorders with real H.264/AAC clips, not yet docked."""
    now = datetime.now()
    scene = Scene(root, {1: officer_a(now), 2: officer_b(now)})
    for number, rec in scene.recorders.items():
        simkit.build(root / f"bay{number}", rec, docked=False)
    return scene


def run_dock(scene: Scene, cfg: DockConfig, say: Callable[[str], None]) -> Daemon:
    """Dock both recorders and run until every clip is at the receiver and bays settle."""
    daemon = assemble(cfg, refresh_s=1.0)
    daemon.start()
    say(f"status page: {page_url(daemon) or 'not served (see the log)'} (open it now)")
    for number, rec in scene.recorders.items():
        say(f"docking {rec.device_id} (officer {rec.officer_name}) in bay {number}")
        simkit.dock(scene.root / f"bay{number}", rec)
    total = sum(len(r.clips) for r in scene.recorders.values())
    _wait(lambda: _synced(daemon) >= total, TIMEOUT_S, "every clip to reach the central receiver")
    _wait(
        lambda: all(w.view.state in ("ready", "fault") for w in daemon.bays.values()),
        60,
        "bays to settle",
    )
    return daemon


def _serve_until_interrupted(daemon: Daemon, say: Callable[[str], None]) -> None:
    """--keep: everything keeps running (the page too) until Ctrl-C."""
    say(f"--keep: the dock serves {page_url(daemon) or 'no page'}; Ctrl-C stops everything")
    try:
        daemon.stopping.wait()
    except KeyboardInterrupt:
        say("stopping")


def _synced(daemon: Daemon) -> int:
    return sum(1 for r in daemon.services.index.iter_all() if acked_upstream(r))


def receiver_holds(store: Path, record: dict[str, Any]) -> Path | None:
    """The receiver's copy of a clip when its bytes hash to the clip's SHA-256."""
    path = store / DOCK_ID / record["sha256"] / record["file_name"]
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return path if digest == record["sha256"] else None


def main(say: Callable[[str], None] = print, keep: bool = False) -> int:
    """Run the demo in a fresh directory; print the summary; 0 when everything arrived intact.

    With `keep`, the dock, its page, the receiver and the broker run on after the summary
    until Ctrl-C.
    """
    from agent.demo.summary import summary
    from agent.demo.trust_summary import trust_lines
    from agent.transfer.receiver.server import Receiver

    root = Path(tempfile.mkdtemp(prefix="dock-agent-demo-"))
    say(f"demo directory: {root}")
    say("making two simulated recorders with real H.264 clips (ffmpeg)...")
    scene = build_scene(root)
    site = make_site(root / "broker", free_port(), [DOCK_ID])
    with broker(site) as port:
        say(
            f"private Mosquitto on 127.0.0.1:{port} from config/mosquitto/ (TLS, passwords, ACL; "
            f"made on the spot in {site.root}); central receiver started knowing the dock's "
            "public key, the dock knowing central's"
        )
        mqtt = parse_receiver_config(
            tomllib.loads(
                f'[receiver]\nstore_dir = "{scene.store}"\n[mqtt]\n'
                + site_mqtt(site, site.receiver)
            )
        ).mqtt
        receiver = Receiver(
            scene.store,
            mqtt,
            site.receiver,
            dock_keys_dir=site.dock_keys_dir,
            signing_key_file=site.receiver_key_file,
        )
        receiver.start()
        cfg = dock_config(scene, site, page_port())
        try:
            daemon = run_dock(scene, cfg, say)
            records = sorted(daemon.services.index.iter_all(), key=lambda r: r["recorded_start"])
            text, ok = summary(scene, daemon, records, receiver_holds, page_url(daemon))
            chain = verify_chain(cfg.data_dir / "custody.jsonl")
            pub = site.dock_keys_dir / f"{cfg.client_id}.pub"
            trust, proved = trust_lines(cfg, scene.store / cfg.client_id, pub)
            ok = ok and proved
            head, result = text.rsplit("\n\nRESULT", 1)
            say("\n".join([head, *trust, "", "RESULT" + result]))
            say(f"custody chain: {'intact' if not chain else 'BROKEN: ' + '; '.join(chain)}")
            if keep:
                _serve_until_interrupted(daemon, say)
            daemon.stop()
        finally:
            receiver.stop()
    (root / "summary.json").write_text(
        json.dumps([dict(r) for r in records], ensure_ascii=False, indent=1)
    )
    return 0 if ok and not chain else 1
