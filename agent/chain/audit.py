"""`dock-agent receive verify`: central's check of every dock's chain (SPEC 8.1), streamed.

Per dock, per chain: the runs read in order (continuity from seq 1, each hash and link,
every chunk signature: `walk`); every clip stored at central matched by a `clip_offloaded`
entry with the same SHA-256 and the manifest's `custody_seq`/`custody_hash`; every
`recorder_clip_deleted` of a clip central holds; every note a clip's manifest names, and
every note explained, created in the chain first; clips the chain names that central does
not hold yet, listed; chains after a dock's first, listed for a person to acknowledge.

Memory: one dock at a time, and of it only the clips offloaded (a SHA-256 and a seq each)
and the note ids; entries are read line by line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.chain.holding import ACKNOWLEDGED, CUSTODY_DIR, FORKS_DIR, ChainHold
from agent.chain.walk import Walked, walk

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class AuditLine:
    """One line of the report: a problem, a clip pending, or a chain to acknowledge."""

    kind: str  # "mismatch", "pending", "acknowledge"
    dock: str
    text: str
    chain: str = ""
    seq: int | None = None
    clip: str = ""


@dataclass
class ChainReport:
    """One chain of a dock, as walked."""

    chain_id: str
    last_seq: int = 0
    runs: int = 0
    first_ts: str = ""
    acknowledged: bool = True


@dataclass
class DockReport:
    """What `receive verify` says of one dock."""

    dock: str
    chains: list[ChainReport] = field(default_factory=list)
    clips: int = 0
    matched: int = 0
    pending: int = 0
    problems: int = 0


class DockAudit:
    """The check of one dock's directory at central; `findings()` streams, `report` sums up."""

    def __init__(self, client_dir: Path, pub: Ed25519PublicKey | None) -> None:
        self.dir = Path(client_dir)
        self.pub = pub
        self.report = DockReport(self.dir.name)
        self._offloaded: dict[str, list[tuple[str, int, str]]] = {}
        self._notes: set[str] = set()
        self._synced: set[str] = set()  # clips whose arrival at central the chain logged so far
        self._found: list[AuditLine] = []

    def findings(self) -> Iterator[AuditLine]:
        """Every finding of the dock, chains first, then the clips at central, then pending."""
        if self.pub is None:
            yield self._problem("no public key of this dock: chain signatures not checked")
        hold = ChainHold(self.dir / CUSTODY_DIR)
        for number, chain_id in enumerate(hold.chains()):
            yield from self._chain(hold.root / chain_id, first=number == 0)
        yield from self._forks(hold.root / FORKS_DIR)
        yield from self._clips()
        yield from self._pending()

    def _problem(
        self, text: str, chain: str = "", seq: int | None = None, clip: str = ""
    ) -> AuditLine:
        self.report.problems += 1
        return AuditLine("mismatch", self.dir.name, text, chain, seq, clip)

    def _chain(self, cdir: Path, first: bool) -> Iterator[AuditLine]:
        chain = cdir.name
        found: list[AuditLine] = []

        def problem(seq: int | None, text: str) -> None:
            where = f"seq {seq}: " if seq is not None else ""
            found.append(self._problem(f"chain {chain}: {where}{text}", chain, seq))

        entries = walk(cdir, self.pub, problem)
        while True:
            try:
                entry = next(entries)
            except StopIteration as stop:
                walked: Walked = stop.value
                break
            self._fact(chain, entry, problem)
            yield from found
            found.clear()
        yield from found
        yield from self._summarise(cdir, walked, first)

    def _summarise(self, cdir: Path, walked: Walked, first: bool) -> Iterator[AuditLine]:
        acknowledged = first or (cdir / ACKNOWLEDGED).exists()
        self.report.chains.append(
            ChainReport(cdir.name, walked.last_seq, walked.runs, walked.first_ts, acknowledged)
        )
        if not acknowledged:
            yield AuditLine(
                "acknowledge",
                self.dir.name,
                f"chain {cdir.name}: a new chain of this dock (seqs 1-{walked.last_seq}, begun "
                f"{walked.first_ts or 'unknown'}): a reinstalled or wiped dock? A person "
                f"acknowledges it with {cdir / ACKNOWLEDGED}",
                cdir.name,
            )

    def _fact(self, chain: str, entry: dict[str, Any], problem: Any) -> None:
        """Remember what later checks need; check deletions and notes as they come."""
        event, seq = entry.get("event"), int(entry["seq"])
        if event == "clip_offloaded":
            sha = str(entry.get("sha256"))
            self._offloaded.setdefault(sha, []).append((chain, seq, str(entry.get("hash"))))
        elif event == "clip_synced":
            self._synced.add(str(entry.get("sha256")))
        elif event == "recorder_clip_deleted":
            self._deleted(str(entry.get("sha256")), seq, problem)
        elif event == "note_created":
            self._notes.add(str(entry.get("note_id")))
        elif event == "note_explained" and str(entry.get("note_id")) not in self._notes:
            problem(seq, f"note_explained for note {entry.get('note_id')}, never created before")

    def _deleted(self, sha: str, seq: int, problem: Any) -> None:
        """A recorder deletion must follow the clip's arrival, and central must hold it."""
        if not (self.dir / sha / MANIFEST).exists():
            problem(seq, f"recorder_clip_deleted of clip {sha}, which central does not hold")
        elif sha not in self._synced:
            problem(seq, f"recorder_clip_deleted of clip {sha} before its clip_synced entry")

    def _forks(self, fdir: Path) -> Iterator[AuditLine]:
        if not fdir.is_dir():
            return
        for why in sorted(fdir.glob("*.json")):
            doc = _read_json(why) or {}
            yield self._problem(
                f"chain {doc.get('chain_id')}: seq {doc.get('seq')}: a chunk (seqs "
                f"{doc.get('first_seq')}-{doc.get('last_seq')}) was refused as {doc.get('reason')}"
                f" ({doc.get('detail')}); kept as {why.with_suffix('.jsonl')}",
                str(doc.get("chain_id")),
                doc.get("seq") if isinstance(doc.get("seq"), int) else None,
            )

    def _clips(self) -> Iterator[AuditLine]:
        with os.scandir(self.dir) as it:
            for item in it:
                if item.name.startswith(("_", ".")) or not item.is_dir():
                    continue
                user_data = _read_json(Path(item.path) / MANIFEST)
                if user_data is None:
                    continue  # not complete (a transfer in progress)
                kind = user_data.get("kind")
                if kind == "manifest":
                    yield from self._manifest_notes(Path(item.path), user_data)
                elif kind != "custody":
                    yield from self._clip(item.name, user_data)

    def _clip(self, name: str, user_data: dict[str, Any]) -> Iterator[AuditLine]:
        self.report.clips += 1
        sha = str(user_data.get("sha256"))
        at = (user_data.get("custody_seq"), user_data.get("custody_hash"))
        offloads = self._offloaded.get(sha)
        if not offloads:
            yield self._problem(
                f"clip {sha} is at central but no chain has its clip_offloaded", clip=sha
            )
            return
        match = next((o for o in offloads if (o[1], o[2]) == at), None)
        if match is None:
            chain, seq, _ = offloads[0]
            yield self._problem(
                f"clip {sha}: its manifest says custody seq {at[0]}, the chain logged its "
                f"clip_offloaded at seq {seq} with another hash",
                chain,
                seq,
                sha,
            )
        self._offloaded.pop(sha, None)
        self.report.matched += match is not None

    def _manifest_notes(self, fdir: Path, user_data: dict[str, Any]) -> Iterator[AuditLine]:
        clip = str(user_data.get("clip_sha256"))
        names = [p for p in fdir.iterdir() if p.name.endswith(".manifest.json")]
        manifest = _read_json(names[0]) if names else None
        for note in (manifest or {}).get("notes") or []:
            note_id = note.get("note_id") if isinstance(note, dict) else note
            if str(note_id) not in self._notes:
                yield self._problem(
                    f"clip {clip}: its manifest names note {note_id}, which no chain created",
                    clip=clip,
                )

    def _pending(self) -> Iterator[AuditLine]:
        for sha, offloads in sorted(self._offloaded.items(), key=lambda kv: kv[1][0][1]):
            chain, seq, _ = offloads[0]
            self.report.pending += 1
            yield AuditLine(
                "pending",
                self.dir.name,
                f"clip {sha} (custody seq {seq}): not at central yet",
                chain,
                seq,
                sha,
            )
        self._offloaded.clear()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def dock_dirs(store: Path, only: str | None = None) -> list[Path]:
    """Each dock's directory in the store (by client id), or just `only`'s."""
    if only is not None:
        return [store / only]
    if not store.is_dir():
        return []
    return sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
