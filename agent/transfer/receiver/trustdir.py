"""The receiver's side of SPEC 11: every dock's transfer key, and what an init must carry."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.transfer import protocol as p
from agent.transfer import trust

logger = logging.getLogger(__name__)


class DockKeys:
    """`{dock_keys_dir}/{client_id}.key`, read when needed (a dock added needs no restart).

    `dock_keys_dir` given as a bare name (no `/`) under systemd is a credential name: the unit's
    `LoadCredential=NAME:/etc/dock-agent/dock-keys` loads each `{client_id}.key` of that
    directory as `$CREDENTIALS_DIRECTORY/NAME_{client_id}.key`.
    """

    def __init__(self, directory: Path | str) -> None:
        text = str(directory)
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        self.directory = Path(cred_dir) if cred_dir and "/" not in text else Path(text)
        self.prefix = f"{text}_" if cred_dir and "/" not in text else ""

    def key(self, client_id: str) -> bytes | None:
        """The key of `client_id`, or None when it has none (an unreadable key is logged)."""
        if p.path_component_problem(client_id, p.MAX_CLIENT_ID_BYTES):
            return None
        path = self.directory / f"{self.prefix}{client_id}.key"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            logger.error("cannot read the transfer key %s: %s", path, exc)
            return None
        try:
            return trust.parse_key(text, str(path))
        except trust.TransferKeyError as exc:  # names the file, never the key
            logger.error("%s", exc)
            return None

    def check_init(self, client_id: str, init: p.Init) -> bytes:
        """The client's key when the init's `user_data.dock_sig` verifies; else refused 0x87."""
        key = self.key(client_id)
        if key is None:
            raise p.ProtocolError(p.NOT_AUTHORIZED, f"no transfer key for client {client_id!r}")
        meta = init.meta
        expected = trust.init_signature(key, client_id, init.file_id, meta.size, meta.checksum)
        if not trust.valid(expected, meta.user_data.get("dock_sig")):
            raise p.ProtocolError(p.NOT_AUTHORIZED, "init: dock_sig missing or does not verify")
        return key
