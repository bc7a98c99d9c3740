"""Deliberately broken copies of the agent's durability code: the power-cut test must catch them.

Applied in a daemon forked by the zygote when its environment holds POWERCUT_BREAK=NAME.
"""

from __future__ import annotations

from collections.abc import Callable


def no_store_dir_fsync() -> None:
    """The store links clips into place but never fsyncs their directory (names stay cached)."""
    import agent.evidence.store as store

    store.fsync_dir = lambda path: None  # type: ignore[assignment]


BREAKS: dict[str, Callable[[], None]] = {
    "store-dir-fsync": no_store_dir_fsync,
}
