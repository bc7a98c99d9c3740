"""The demo's word on trust (SPEC 11, 8.1): whose keys, receipts proved, the chain at central."""

from __future__ import annotations

from pathlib import Path

from agent.chain.audit import DockAudit
from agent.config import DockConfig
from agent.evidence.custody import iter_entries
from agent.trust import keys
from agent.trust.dock import dock_fingerprint


def trust_lines(cfg: DockConfig, central_dir: Path, dock_pub: Path) -> tuple[list[str], bool]:
    """The TRUST section of the summary, and whether every ack and the chain were proved."""
    entries = list(iter_entries(cfg.data_dir / "custody.jsonl"))
    synced = [e for e in entries if e.get("event") == "clip_synced"]
    receipts = [e for e in synced if e.get("ack") == "receipt"]
    freed = [e for e in entries if e.get("event") == "recorder_clip_deleted"]
    central = keys.fingerprint(keys.load_public(Path(cfg.mqtt.central_key_file)))
    audit = DockAudit(central_dir, keys.load_public(dock_pub))
    mismatches = [f.text for f in audit.findings() if f.kind == "mismatch"]
    held = sum(c.last_seq for c in audit.report.chains)
    lines = [
        "",
        "TRUST (SPEC 11: Ed25519 keys made on the spot, only public keys exchanged)",
        f"  dock key             : {dock_fingerprint(cfg)}  (compare: dock-agent keys)",
        f"  central key          : {central}",
        f"  receipts verified    : {len(receipts)} of {len(synced)} acks carried central's "
        "signed receipt over the fin's nonce",
        f"  recorder files freed : {len(freed)}, each only after its verified receipt",
        f"  chain at central     : {held} of {len(entries)} custody entries held and checked "
        f"link by link; receive verify: {'OK' if not mismatches else 'FAILED'}",
    ]
    lines += [f"    MISMATCH {m}" for m in mismatches]
    ok = len(receipts) == len(synced) > 0 and not mismatches
    return lines, ok
