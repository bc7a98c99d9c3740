"""`dock-agent verify` while the daemon works (SPEC 9): one consistent moment, no wolf cried.

IT runs verify whenever it likes. Here it runs in a loop, as a subprocess, while a real
daemon docks simulated recorders one after another whose clips have pauses (gap notes)
and while explanations are added; not one run may report a mismatch. Then a note is
removed from notes.json by hand: every run reports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

from agent.daemon.runtime import Daemon
from agent.durable import write_json
from agent.evidence.custody import iter_entries
from firmware_interface import simkit
from tests.dock import config_toml, dock_config, running, settled, wait_for

RECORDERS = 4


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class VerifyLoop(threading.Thread):
    """Runs `dock-agent verify` again and again until stopped; keeps every result."""

    def __init__(self, config: Path) -> None:
        super().__init__(daemon=True)
        self.config = config
        self.results: list[subprocess.CompletedProcess[str]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.results.append(cli("verify", "-c", str(self.config)))

    def mismatches(self) -> list[str]:
        return [
            line
            for r in self.results
            for line in r.stdout.splitlines()
            if line.startswith("MISMATCH") or r.returncode != 0
        ]


class Explainer(threading.Thread):
    """Explains notes through the daemon's own store, one every few milliseconds (a remote
    `notes` command at its busiest): each is a notes.json save and a custody entry."""

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon=True)
        assert daemon.parts is not None
        self.store = daemon.parts.notes
        self.stop = threading.Event()
        self.count = 0

    def run(self) -> None:
        while not self.stop.wait(0.01):
            notes = self.store.list()
            if notes:
                self.store.explain(notes[self.count % len(notes)].note_id, "值班员", "已核实")
                self.count += 1


def recorder(n: int) -> simkit.SimRecorder:
    """A recorder whose clips have 5 s pauses between them: each pause is a gap note."""
    start = datetime.now() - timedelta(hours=2, minutes=10 * n)
    return simkit.SimRecorder(
        device_id=f"ZFY00{n:05d}", clips=simkit.shift(start, [1, 1, 1, 1], pause_s=5)
    )


def notes_of(data: Path) -> list[dict[str, object]]:
    path = data / "notes.json"
    return json.loads(path.read_text())["notes"] if path.exists() else []


def explain_all(config: Path, data: Path, done: set[str]) -> None:
    """Explain each note not yet explained, through the CLI (another process writing)."""
    for note in notes_of(data):
        note_id = str(note["note_id"])
        if note_id not in done:
            done.add(note_id)
            result = cli(
                "notes", "add", note_id, "--author", "王警官", "--text", "换电池", "-c", str(config)
            )
            assert result.returncode == 0, result.stderr


def test_verify_in_a_loop_through_dockings_reports_nothing(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path, bays=2)
    config = tmp_path / "dock.toml"
    config.write_text(config_toml(cfg))
    loop = VerifyLoop(config)
    explained: set[str] = set()
    with running(cfg) as (daemon, views):
        explainer = Explainer(daemon)
        explainer.start()
        loop.start()
        for n in range(RECORDERS):
            bay = 1 + n % 2
            simkit.build(tmp_path / f"bay{bay}", recorder(n))
            wait_for(lambda b=bay: settled(daemon, views, b), 120, f"bay {bay} to finish")
            explain_all(config, cfg.data_dir, explained)
            simkit.undock(tmp_path / f"bay{bay}")
        runs = len(loop.results)
        wait_for(lambda: len(loop.results) >= runs + 10, 120, "ten more verify runs")
        loop.stop.set()
        explainer.stop.set()
        loop.join(120)
        explainer.join(10)
    entries = list(iter_entries(cfg.data_dir / "custody.jsonl"))
    created = [e for e in entries if e["event"] == "note_created"]
    offloaded = [e for e in entries if e["event"] == "clip_offloaded"]
    assert len(offloaded) == 4 * RECORDERS, "every clip of every docking offloaded"
    assert len(created) >= 3 * RECORDERS, "the pauses made gap notes while verify ran"
    assert len(explained) == len(created)
    assert explainer.count >= 100, "explanations were added all along"
    assert len(loop.results) >= 15, "verify ran through the dockings, not once"
    assert loop.mismatches() == [], f"{len(loop.results)} runs"
    assert all("verify OK" in r.stdout for r in loop.results)


def test_a_note_removed_by_hand_is_reported_by_every_run(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    config = tmp_path / "dock.toml"
    config.write_text(config_toml(cfg))
    with running(cfg) as (daemon, views):
        simkit.build(tmp_path / "bay1", recorder(0))
        wait_for(lambda: settled(daemon, views, 1), 120, "bay 1 to finish")
        assert cli("verify", "-c", str(config)).returncode == 0
        doc = json.loads((cfg.data_dir / "notes.json").read_text())
        removed = doc["notes"].pop(1)
        write_json(cfg.data_dir / "notes.json", doc)
        os.sync()
        simkit.undock(tmp_path / "bay1")
        simkit.build(tmp_path / "bay2", recorder(1))  # no bay 2: the daemon keeps running
        runs = [cli("verify", "-c", str(config)) for _ in range(3)]
    for result in runs:
        assert result.returncode == 1, result.stdout
        lines = [line for line in result.stdout.splitlines() if line.startswith("MISMATCH")]
        assert lines == [
            f"MISMATCH notes vs custody: custody seq {seq}: note_created for note "
            f"{removed['note_id']}, which notes.json does not hold"
            for seq in [
                e["seq"]
                for e in iter_entries(cfg.data_dir / "custody.jsonl")
                if e.get("note_id") == removed["note_id"]
            ]
        ]
