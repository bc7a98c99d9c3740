"""The receiver's custody desk (SPEC 8.1): a chunk's fin is answered only after its check.

The chunk arrives as any file does and is assembled and checked against its SHA-256 by the
transfer store; then, before `fin` is answered, `CustodyDesk.on_fin` checks it as a custody
chunk and stores what is new of it in `{store}/{client_id}/_custody/{chain_id}/`; the chunk's
transfer directory is then removed (what is held is under `_custody`; a resend is assembled
afresh). A refused chunk's fin is answered 0x80 with the reason (`custody_fork`, ...), 0x87
when unsigned, and its transfer stays complete: the sender's resends of it are checked again
at each fin without being stored again (a gap may since have been filled).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.chain.check import UNSIGNED, ChunkRefused, is_custody, parse_meta
from agent.chain.chunk import MAX_CHUNK_BYTES
from agent.chain.holding import CUSTODY_DIR, ChainHold
from agent.transfer import protocol as p

MANIFEST = "manifest.json"

KeyOf = Callable[[str], Ed25519PublicKey | None]


class CustodyDesk:
    """Checks custody chunks at their fin; one ChainHold per dock, made on first use."""

    def __init__(self, store: Path, key_of: KeyOf | None) -> None:
        """`key_of`: a dock's public key by client id; None when the receiver has no dock keys
        (signatures are then not checked, everything else is)."""
        self.store = Path(store)
        self.key_of = key_of
        self._holds: dict[str, ChainHold] = {}
        self._lock = threading.Lock()

    def hold(self, client_id: str) -> ChainHold:
        """The chains of one dock (client directory names are the store's own, already safe)."""
        with self._lock:
            found = self._holds.get(client_id)
            if found is None:
                found = self._holds[client_id] = ChainHold(self.store / client_id / CUSTODY_DIR)
            return found

    def on_fin(self, client_id: str, fdir: Path) -> None:
        """Check a complete transfer when it is a custody chunk; ProtocolError when refused."""
        try:
            user_data = json.loads((fdir / MANIFEST).read_bytes())
        except (OSError, ValueError):
            return
        if not is_custody(user_data):
            return
        try:
            self._accept(client_id, fdir, user_data)
        except ChunkRefused as refused:
            code = p.NOT_AUTHORIZED if refused.reason == UNSIGNED else p.UNSPECIFIED_ERROR
            raise p.ProtocolError(code, refused.reason) from None
        shutil.rmtree(fdir, ignore_errors=True)  # held under _custody now

    def _accept(self, client_id: str, fdir: Path, user_data: dict[str, object]) -> None:
        meta = parse_meta(user_data)
        pub = None
        if self.key_of is not None:
            pub = self.key_of(client_id)
            if pub is None:
                raise ChunkRefused(UNSIGNED, f"no key for {client_id}", keep=False)
        data = _chunk_bytes(fdir)
        self.hold(client_id).accept(meta, data, pub)


def _chunk_bytes(fdir: Path) -> bytes:
    """The one data file of a complete transfer directory (its manifest and dot files aside)."""
    names = [
        q
        for q in fdir.iterdir()
        if q.is_file() and q.name != MANIFEST and not q.name.startswith(".")
    ]
    if len(names) != 1 or names[0].stat().st_size > 4 * MAX_CHUNK_BYTES:
        raise ChunkRefused("custody_invalid", "not one chunk file of a bounded size", keep=False)
    return names[0].read_bytes()
