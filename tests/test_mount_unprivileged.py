"""Mounting as the service runs: an unprivileged uid whose only capability is CAP_SYS_ADMIN.

dock-agent.service runs as user dock-agent with AmbientCapabilities=CAP_SYS_ADMIN (and that
as the whole bounding set, NoNewPrivileges). mount(8) refuses such a caller; the agent's
mount(2) must not. The snippet runs under setpriv as uid/gid 65534 with exactly that
capability set, on a copy of the agent's sources (the checkout and venv may live where that
uid cannot read) and the system python3.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_interface import mount
from tests.loopdev import Loops, build_ext4  # noqa: E402

pytest_plugins = ["tests.loopdev"]  # fixtures: loops

UID = GID = 65534
REPO = Path(__file__).resolve().parents[1]
CAP_SYS_ADMIN = 21
SETPRIV = [
    "setpriv",
    f"--reuid={UID}",
    f"--regid={GID}",
    "--clear-groups",
    "--inh-caps=-all,+sys_admin",
    "--ambient-caps=+sys_admin",
    "--bounding-set=-all,+sys_admin",
]

SNIPPET = """
import json, os, sys
from pathlib import Path
from firmware_interface import mount
dev, target = sys.argv[1], Path(sys.argv[2])
caps = int(open("/proc/self/status").read().split("CapEff:")[1].split()[0], 16)
fstype = mount.probe_fs_type(dev)
driver = mount.mount_ro(dev, target, fstype or "")
out = {"uid": os.getuid(), "euid": os.geteuid(), "caps": caps, "fstype": fstype,
       "driver": driver, "options": sorted(mount.mount_options(target) or ()),
       "files": sorted(p.name for p in target.iterdir()),
       "hello": (target / "DCIM" / "hello.txt").read_text()}
mount.unmount(target)
out["mounted_after"] = mount.is_mounted(target)
print(json.dumps(out))
"""


def run_unprivileged(
    python: str, *args: str, cwd: Path, nnp: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `python args` under setpriv as uid 65534 with CAP_SYS_ADMIN only (nnp: no_new_privs)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(cwd), "LC_ALL": "C.UTF-8"}
    cmd = [
        *SETPRIV,
        *(["--no-new-privs"] if nnp else []),
        python,
        "-S",
        *args,
    ]  # no site-packages: mount.py needs only the stdlib
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def usable_python(cwd: Path) -> str:
    """A python3 that uid 65534 can run under setpriv; skips the test (with why) if none."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop to an unprivileged uid")
    errors = []
    for python in dict.fromkeys(("/usr/bin/python3", shutil.which("python3"), sys.executable)):
        if python is None:
            continue
        proc = run_unprivileged(python, "-c", "import ctypes, json", cwd=cwd)
        if proc.returncode == 0:
            return python
        errors.append(f"{python}: {proc.stderr.strip()[-200:]}")
    pytest.skip(f"no python3 runs as uid {UID} with ambient CAP_SYS_ADMIN: {'; '.join(errors)}")


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory uid 65534 can traverse: the agent's sources and a media dir it owns."""
    with tempfile.TemporaryDirectory(prefix="dock-agent-unpriv-") as name:
        root = Path(name)
        root.chmod(0o755)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        for package in ("agent", "firmware_interface"):
            shutil.copytree(REPO / package, root / package, ignore=skip)
        (root / "media").mkdir()
        os.chown(root / "media", UID, GID)
        try:
            yield root
        finally:
            if mount.is_mounted(root / "media" / "bay1"):
                subprocess.run(["umount", "-l", str(root / "media" / "bay1")], check=False)


@pytest.fixture
def bay_device(loops: Loops, tmp_path: Path) -> Iterator[str]:
    """A loop-attached ext4 recorder image, root:65534 0640 as the udev rule sets a bay's."""
    (tmp_path / "tree" / "DCIM").mkdir(parents=True)
    (tmp_path / "tree" / "DCIM" / "hello.txt").write_text("hello from the recorder\n")
    device = loops.attach(build_ext4(tmp_path / "tree", tmp_path / "rec.img", size_mb=8))
    before = os.stat(device)
    os.chown(device, 0, GID)
    os.chmod(device, 0o640)
    try:
        yield device
    finally:
        os.chown(device, before.st_uid, before.st_gid)
        os.chmod(device, stat.S_IMODE(before.st_mode))


# With no_new_privs (as the service: NoNewPrivileges=yes) a setuid-root mount(8) runs
# unprivileged; without it, it runs as root and refuses the non-root caller ("must be
# superuser"). mount(2) must work either way.
@pytest.mark.parametrize("nnp", [True, False], ids=["no_new_privs", "new_privs"])
def test_unprivileged_uid_with_only_cap_sys_admin_mounts_read_only(
    bay_device: str, world: Path, nnp: bool
) -> None:
    python = usable_python(world)
    target = world / "media" / "bay1"
    proc = run_unprivileged(python, "-c", SNIPPET, bay_device, str(target), cwd=world, nnp=nnp)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == out["euid"] == UID
    assert out["caps"] == 1 << CAP_SYS_ADMIN  # nothing but CAP_SYS_ADMIN
    assert out["fstype"] == "ext4"  # blkid can probe a group-readable bay device
    assert out["driver"] == "ext4"
    assert {"ro", "nosuid", "nodev", "noexec", "norecovery"} <= set(out["options"])
    assert "DCIM" in out["files"]
    assert out["hello"] == "hello from the recorder\n"
    assert out["mounted_after"] is False
