"""Commands that only read create nothing and open nothing for writing; errors are one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.cli import main
from firmware_interface import simkit
from tests.dock import config_toml, dock_config, running, settled, wait_for

READ_ONLY = (["clips"], ["clips", "--json"], ["status"], ["status", "--json"], ["verify"])
NOTES = (["notes", "list"], ["notes", "list", "--json"])
STRACE = shutil.which("strace")
WRITE_FLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC")


def write_config(tmp: Path, data_dir: Path) -> Path:
    path = tmp / "dock.toml"
    path.write_text(f'[dock]\nid = "dock-ro"\ndata_dir = "{data_dir}"\n')
    return path


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and mtime (what a writer would change)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("args", [*READ_ONLY, *NOTES], ids=" ".join)
def test_on_an_empty_data_dir_nothing_is_created(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    missing = tmp_path / "never-made"
    for data_dir in (data, missing):
        config = write_config(tmp_path, data_dir)
        assert main([*args, "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert list(data.iterdir()) == [], "a read-only command left files behind"
    assert not missing.exists(), "a read-only command created the data directory"
    if args == ["clips"]:
        assert out.splitlines() == ["0 clips", "0 clips"]
    if args == ["verify"]:
        assert "verify OK: 0 stored clips" in out


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (scripts/setup.sh --dev)")
def test_on_a_real_store_nothing_is_opened_for_writing(tmp_path: Path) -> None:
    cfg = dock_config(tmp_path)
    start = datetime.now() - timedelta(hours=1)
    rec = simkit.SimRecorder(
        clips=[simkit.SimClip(start, 1), simkit.SimClip(start + timedelta(seconds=20), 1)]
    )
    simkit.build(tmp_path / "bay1", rec)
    with running(cfg) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 60, "bay 1 finished")
    config = tmp_path / "dock.toml"
    config.write_text(config_toml(cfg))
    before = tree(cfg.data_dir)
    data = str(cfg.data_dir)
    for args in (["clips"], ["status", "--json"], ["verify"], ["notes", "list"]):
        trace = tmp_path / "trace"
        done = subprocess.run(
            [
                STRACE or "strace",
                "-f",
                "-qq",
                "-e",
                "trace=%file,%desc",
                "-o",
                str(trace),
                sys.executable,
                "-m",
                "agent",
                *args,
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        writes = [
            line
            for line in trace.read_text().splitlines()
            if data in line
            and (
                (re.search(r"\bopen(at)?\(", line) and WRITE_FLAGS.search(line))
                or re.search(
                    r"\b(mkdir|mkdirat|unlink|unlinkat|rename|renameat2?|creat|"
                    r"truncate|link|linkat|symlink|symlinkat|chmod|fchmodat)\(",
                    line,
                )
            )
        ]
        assert writes == [], f"{' '.join(args)} wrote under the data dir: {writes}"
    assert tree(cfg.data_dir) == before
    assert (
        "2 clips"
        in subprocess.run(
            [sys.executable, "-m", "agent", "clips", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    )


def cli(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_data_dir_that_cannot_be_made_is_one_line_naming_path_and_cause(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("")
    config = tmp_path / "dock.toml"
    config.write_text(
        f'[dock]\nid = "d"\ndata_dir = "{tmp_path / "a-file" / "data"}"\n'
        '[mqtt]\nport = 1\n[ui]\nlisten = ""\n'
    )
    result = cli("run", "-c", str(config))
    assert result.returncode == 1
    assert one_line(result) == f"dock-agent run: {tmp_path / 'a-file' / 'data'}: Not a directory"


def without_override() -> list[str]:
    """A prefix that runs a command as this user without the power to ignore file modes.

    No other user runs it: one could not read a checkout that lives in a 0700 directory
    (mktemp -d), and would fail with "No module named agent" instead of the error under test.
    Root keeps its uid but loses every capability (CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    among them), so a mode-0 directory refuses it as it refuses any owner.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    prefix = [setpriv or "setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    if setpriv is None or subprocess.run([*prefix, "true"], check=False).returncode != 0:
        pytest.skip("as root this needs setpriv (util-linux) allowed to drop capabilities")
    return prefix


def test_a_data_dir_without_permission_is_one_line(tmp_path: Path) -> None:
    base = tmp_path / "dock data, with spaces"
    data = base / "data"
    (data / "index").mkdir(parents=True)
    (data / "index" / "active.json").write_text("{}")
    config = write_config(base, data)
    prefix = without_override()
    data.chmod(0)  # not even its owner may enter
    try:
        for command in ("clips", "status", "verify"):
            result = cli(command, "-c", str(config), user=prefix)
            assert result.returncode == 1, result.stderr
            # verify reads the custody log's end first (SPEC 9: one moment, custody first)
            first = data / ("custody.jsonl" if command == "verify" else "index/lock")
            assert one_line(result) == f"dock-agent {command}: {first}: Permission denied"
    finally:
        data.chmod(0o700)  # so that tmp_path can be removed


def test_help_speaks_to_the_person_at_the_terminal() -> None:
    top = cli("--help").stdout
    assert "docking station for body-worn recorders" in top
    assert "demo (needs mosquitto and ffmpeg" in top and "agent/commands" not in top
    demo = cli("demo", "--help").stdout
    assert "mosquitto" in demo and "ffmpeg" in demo
    assert "default: $DOCK_AGENT_CONFIG" in cli("clips", "--help").stdout
    export = cli("export", "0123456789abcdef")
    assert export.returncode == 2
    assert "required: --out, --operator, --approval, --reason" in export.stderr
    assert cli("hold", "0123456789abcdef").returncode == 2
