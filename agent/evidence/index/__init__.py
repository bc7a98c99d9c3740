"""The clip index: the active set (journaled) and the archive of finished clips."""

from agent.evidence.index.archive import ArchiveFollower, line_clip_id, shard_name
from agent.evidence.index.clip_index import ClipIndex
from agent.evidence.index.journal import IndexCorrupt

__all__ = ["ArchiveFollower", "ClipIndex", "IndexCorrupt", "line_clip_id", "shard_name"]
