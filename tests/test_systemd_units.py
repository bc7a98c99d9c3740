"""The shipped systemd units, sysusers and tmpfiles pass systemd's own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICES = ["dock-agent.service", "dock-agent-receiver.service"]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
SHIPPED_BINARY = "/opt/dock-agent/bin/dock-agent"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def installed_copy(name: str, tmp_path: Path) -> Path:
    """The unit as installed: `verify` insists that ExecStart exists, so point it at a real file."""
    text = (UNITS / name).read_text()
    stand_in = shutil.which("true") or "/bin/true"
    copy = tmp_path / name
    copy.write_text(text.replace(SHIPPED_BINARY, stand_in))
    return copy


@needs_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_verify_is_clean(name: str, tmp_path: Path) -> None:
    result = run(ANALYZE or "", "verify", str(installed_copy(name, tmp_path)))
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    if not Path(SHIPPED_BINARY).exists():  # as shipped, the only complaint is the absent binary
        raw = run(ANALYZE or "", "verify", str(UNITS / name))
        complaints = [line for line in raw.stderr.splitlines() if line.strip()]
        assert all(SHIPPED_BINARY in line for line in complaints), raw.stderr


@needs_analyze
@pytest.mark.parametrize("name", SERVICES)
def test_security_exposure_at_most_3(name: str) -> None:
    result = run(ANALYZE or "", "security", "--offline=true", str(UNITS / name))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no systemd-sysusers")
def test_sysusers_and_tmpfiles_apply(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    users = run("systemd-sysusers", f"--root={tmp_path}", str(UNITS / "dock-agent.sysusers"))
    assert users.returncode == 0, users.stderr
    assert "dock-agent:" in (tmp_path / "etc/passwd").read_text()
    tmpfiles = run(
        "systemd-tmpfiles", f"--root={tmp_path}", "--create", str(UNITS / "dock-agent.tmpfiles")
    )
    assert tmpfiles.returncode == 0, tmpfiles.stderr
    assert (tmp_path / "var/lib/dock-agent").is_dir()
    assert (tmp_path / "run/dock-agent/media").is_dir()


def test_udev_rule_hides_recorders_from_automounters() -> None:
    rules = (UNITS / "99-dock-agent.rules").read_text()
    assert 'ENV{UDISKS_IGNORE}="1"' in rules and 'ENV{UDISKS_AUTO}="0"' in rules
    assert 'GROUP="dock-agent", MODE="0640"' in rules


def unit_values(name: str, key: str) -> list[str]:
    """Every value of `key=` in a shipped unit (words of each line, in order)."""
    lines = (UNITS / name).read_text().splitlines()
    return [w for line in lines if line.startswith(f"{key}=") for w in line[len(key) + 1 :].split()]


@pytest.mark.parametrize("name", SERVICES)
def test_documentation_is_a_file_the_install_steps_create(name: str) -> None:
    install = (UNITS.parent / "docs" / "INSTALL.md").read_text()
    docs = unit_values(name, "Documentation")
    assert docs, "a unit names its documentation"
    for url in docs:
        assert url.startswith(("file:///", "man:")), f"{url}: not readable offline"
        if url.startswith("file://"):
            path = url.removeprefix("file://")
            created = [
                ln for ln in install.splitlines() if ln.startswith("install ") and path in ln
            ]
            assert created, f"{path}: no INSTALL.md step installs it"
            source = created[0].split("#")[0].split()[-2]
            assert (UNITS.parent / source).is_file(), f"{source}: the installed file is missing"


def test_dock_unit_orders_after_time_sync_without_pulling_it_in() -> None:
    assert "time-sync.target" in unit_values("dock-agent.service", "After")
    assert "time-sync.target" not in unit_values("dock-agent.service", "Wants")


def test_dock_unit_reloads_with_sighup_and_comes_back_after_any_end() -> None:
    assert unit_values("dock-agent.service", "ExecReload") == ["/bin/kill", "-HUP", "$MAINPID"]
    for name in SERVICES:
        assert unit_values(name, "Restart") == ["always"], name
        assert unit_values(name, "RestartPreventExitStatus") == ["2"], name
