"""What an acked clip leaves behind (SPEC 7, 11): its custody entry, its index state, its step.

Called by the sync worker's lane that delivered the clip; the custody log, the index and the
clip flow are shared by the lanes and safe to call from several threads.
"""

from __future__ import annotations

from typing import Any

from agent.events import ClipFlow, Synced
from agent.evidence import lifecycle
from agent.sync.parts import SyncParts
from agent.timebase import utcnow


def ack_kind(s: SyncParts, proves_acks: bool) -> str:
    """How the ack was proved, for the custody entry: a receipt, EMQX, or not at all."""
    if not proves_acks:
        return "unproven"
    return "broker" if s.cfg.mqtt.upstream == "emqx" else "receipt"


def synced(s: SyncParts, flow: ClipFlow, proves_acks: bool, record: dict[str, Any]) -> None:
    """A clip's first ack: `clip_synced` in the custody log, the index advanced, `Synced` out."""
    clip_id = record["clip_id"]
    synced_at = utcnow().isoformat(timespec="seconds")
    s.custody.append(
        "clip_synced",
        device_id=record["device_id"],
        sha256=clip_id,
        client_id=s.cfg.client_id,
        synced_at=synced_at,
        ack=ack_kind(s, proves_acks),
    )
    changes = lifecycle.synced(synced_at, proves_acks)
    lifecycle.advance(s.index, clip_id, s.cfg.delete_policy, **changes)
    s.bus.event(
        "clip_synced", device_id=record["device_id"], sha256=clip_id, file_name=record["file_name"]
    )
    flow.publish(Synced(clip_id, record["device_id"]))


def proven(s: SyncParts, flow: ClipFlow, proves_acks: bool, record: dict[str, Any]) -> None:
    """A clip acked without proof got central's verified receipt on a resend: now it counts."""
    clip_id = record["clip_id"]
    s.custody.append(
        "clip_ack_proven",
        device_id=record["device_id"],
        sha256=clip_id,
        ack=ack_kind(s, proves_acks),
    )
    lifecycle.advance(s.index, clip_id, s.cfg.delete_policy, **lifecycle.ack_proven())
    flow.publish(Synced(clip_id, record["device_id"]))
