"""What a unit's SystemCallFilter= allows (groups expanded by systemd-analyze), and strace traces.

The rules are systemd.exec(5)'s: the first SystemCallFilter= line decides the default (an
allow list denies everything else, a `~` deny list allows everything else); each later line
adds to or removes from that set, in order; an empty assignment resets it; `:errno` suffixes
only change how a denial looks. ProtectClock=yes adds a filter for @clock (reads included),
PrivateDevices=yes for @raw-io, ProtectKernelModules=yes for @module. execve, exit,
exit_group, getrlimit, rt_sigreturn and sigreturn are always allowed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ALWAYS_ALLOWED = frozenset(
    {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
)
IMPLIED_DENIALS = {
    "ProtectClock": "@clock",
    "PrivateDevices": "@raw-io",
    "ProtectKernelModules": "@module",
}
TRUE = ("yes", "true", "on", "1")


def analyze_binary() -> str | None:
    """systemd-analyze, if installed."""
    return shutil.which("systemd-analyze")


def syscall_groups(analyze: str) -> dict[str, list[str]]:
    """Every group `systemd-analyze syscall-filter` knows, with its members (groups unexpanded)."""
    out = subprocess.run(
        [analyze, "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.split()[0], [])
        elif not line.strip() or not line.startswith(" "):
            current = None  # e.g. the "Unlisted System Calls" trailer
        elif current is not None and not line.strip().startswith("#"):
            current.append(line.split()[0])
    return groups


def expand(names: Iterable[str], groups: dict[str, list[str]]) -> set[str]:
    """System call names, with every @group replaced by its members (recursively)."""
    calls: set[str] = set()
    pending = list(names)
    seen: set[str] = set()
    while pending:
        name = pending.pop().split(":", 1)[0]
        if name.startswith("@"):
            if name in seen:
                continue
            seen.add(name)
            if name not in groups:
                raise ValueError(f"{name}: not a group systemd-analyze knows")
            pending.extend(groups[name])
        elif name:
            calls.add(name)
    return calls


@dataclass
class Filter:
    """The effective filter: an allow list (default deny) or a deny list (default allow)."""

    allow_list: bool | None = None
    calls: set[str] = field(default_factory=set)
    also_denied: set[str] = field(default_factory=set)  # filters of ProtectClock= and the like

    def apply(self, line: str, groups: dict[str, list[str]]) -> None:
        """One SystemCallFilter= value, in order."""
        value = line.strip()
        if not value:
            self.allow_list, self.calls = None, set()
            return
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if self.allow_list is None:
            self.allow_list, self.calls = not deny, names
        elif self.allow_list == (not deny):
            self.calls |= names
        else:
            self.calls -= names

    def denies(self, call: str) -> bool:
        """Whether the unit's processes would be refused `call`."""
        if call in ALWAYS_ALLOWED:
            return False
        if call in self.also_denied:
            return True
        if self.allow_list is None:
            return False
        return call not in self.calls if self.allow_list else call in self.calls


def unit_filter(unit: Path, groups: dict[str, list[str]]) -> Filter:
    """The system call filter of a unit file's [Service] section."""
    flt = Filter()
    for raw in unit.read_text().splitlines():
        key, sep, value = raw.strip().partition("=")
        if not sep or raw.lstrip().startswith(("#", ";")):
            continue
        if key == "SystemCallFilter":
            flt.apply(value, groups)
        elif key in IMPLIED_DENIALS and value.strip().lower() in TRUE:
            flt.also_denied |= expand([IMPLIED_DENIALS[key]], groups)
    return flt


# "1234 openat(...) = 3", "1234 <... read resumed>...", "1234 --- SIGCHLD ...", "1234 +++ exited"
CALL_RE = re.compile(r"^\d+\s+(?:<\.\.\. )?([A-Za-z_][A-Za-z0-9_]*)(?:\(| resumed>)")


def traced_calls(trace: Path) -> dict[str, int]:
    """System call name -> times made, from an `strace -f -o FILE` trace (every process)."""
    counts: dict[str, int] = {}
    with open(trace, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = CALL_RE.match(line)
            if match and " resumed>" not in line[: match.end()]:
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def denied(unit: Path, calls: Iterable[str], groups: dict[str, list[str]]) -> list[str]:
    """The calls in `calls` that `unit` would refuse, sorted."""
    flt = unit_filter(unit, groups)
    return sorted(c for c in set(calls) if flt.denies(c))


def assert_unit_allows(unit: Path, calls: dict[str, int], groups: dict[str, list[str]]) -> None:
    """Fail naming every traced call the unit's filter would refuse (and how often it was made)."""
    refused = denied(unit, calls, groups)
    if refused:
        named = ", ".join(f"{c} ({calls[c]}x)" for c in refused)
        raise AssertionError(f"{unit.name} would refuse system calls the process made: {named}")
