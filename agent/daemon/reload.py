"""SIGHUP: re-read the configuration; apply what can change in flight, name what needs a restart.

Reloadable keys are the ones read where they are used, so a new value takes effect at the
next decision and nothing in progress is interrupted (an offload keeps its files, its
docking and its custody entries): `dock.log_level`, `dock.department`, every `[policy]`
key but `timezone` (the recorders' zone is fixed into the running watchers),
`[retention]`, and `mqtt.rate_limit_bytes_per_s`. Everything else (the dock's identity and
data_dir, bays, recorders, the broker and TLS, the roster) is wired into running threads
and connections: a change is logged as needing a restart and the old value stays in force.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from agent.config import DockConfig, parse_config

logger = logging.getLogger(__name__)

RELOADABLE_PREFIXES = ("dock.log_level", "dock.department", "policy.", "retention.")
RELOADABLE_KEYS = frozenset({"mqtt.rate_limit_bytes_per_s"})
RESTART_ONLY = frozenset({"policy.timezone"})
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


@dataclass(frozen=True)
class ReloadPlan:
    """The configuration to run on, and which changed keys apply now or need a restart."""

    effective: DockConfig
    applied: list[str]
    need_restart: list[str]


def reloadable(key: str) -> bool:
    """Whether a changed `key` (dotted, e.g. policy.gap_threshold_s) may change in flight."""
    if key in RESTART_ONLY:
        return False
    return key in RELOADABLE_KEYS or any(
        key == p or (p.endswith(".") and key.startswith(p)) for p in RELOADABLE_PREFIXES
    )


def _table_keys(cfg: DockConfig) -> dict[str, Any]:
    """Top-level table -> its settings, as plain data (lists and tables compared whole)."""
    return dataclasses.asdict(cfg)


def changed_keys(old: DockConfig, new: DockConfig) -> list[str]:
    """Dotted keys whose value differs (a list such as `bay` counts as one key)."""
    a, b = _table_keys(old), _table_keys(new)
    keys: list[str] = []
    for table in a:
        if isinstance(a[table], dict):
            keys += [f"{table}.{k}" for k in a[table] if a[table][k] != b[table][k]]
        elif a[table] != b[table]:
            keys.append(table)
    return keys


def plan_reload(old: DockConfig, new: DockConfig) -> ReloadPlan:
    """New values where they may change in flight, old ones where a restart is needed."""
    changed = changed_keys(old, new)
    applied = [k for k in changed if reloadable(k)]
    need_restart = [k for k in changed if not reloadable(k)]
    data = _table_keys(new)
    kept = _table_keys(old)
    for key in need_restart:
        table, _, name = key.partition(".")
        if name:
            data[table][name] = kept[table][name]
        else:
            data[table] = kept[table]
    return ReloadPlan(parse_config(data), applied, need_restart)


def set_log_level(name: str) -> None:
    """The root logger's level from `[dock] log_level`."""
    logging.getLogger().setLevel(LOG_LEVELS[name])
