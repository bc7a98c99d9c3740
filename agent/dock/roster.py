"""The officer roster: device -> officer assignments from central, cached for offline docks.

The roster (`central.roster_url`) is one JSON object, UTF-8:

    {"version": 1,
     "generated_at": "2026-11-21T08:00:00+08:00",
     "devices": {"ZFY0012345": {"officer_id": "012345", "officer_name": "张三",
                                "unit_no": "410000", "unit_name": "水政监察大队"}}}

`officer_id` is required per device; the other fields are optional strings. It is fetched
with conditional GETs (ETag / If-None-Match; 304 keeps what we have) and cached atomically
in {data_dir}/roster.json as {"url", "etag", "fetched_at", "roster": <the document>}.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import CentralSection, read_secret
from agent.durable import write_json
from agent.timebase import iso, utcnow
from firmware_interface.base import Identity

if TYPE_CHECKING:
    import requests

logger = logging.getLogger(__name__)

CACHE_NAME = "roster.json"
OFFICER_MISMATCH = "officer_mismatch"
OFFICER_FROM_ROSTER = "officer_from_roster"
RETRY_S = 60.0
FIELDS = ("officer_id", "officer_name", "unit_no", "unit_name")


class RosterError(Exception):
    """A roster document is not in the documented format."""


@dataclass(frozen=True)
class Assignment:
    """Who carries a device, according to central."""

    officer_id: str
    officer_name: str = ""
    unit_no: str = ""
    unit_name: str = ""


@dataclass(frozen=True)
class RosterCheck:
    """A recorder identity against the roster: filled-in identity, record fields, flags."""

    identity: Identity
    fields: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


def _assignment(device: str, entry: Any) -> Assignment | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("officer_id"), str):
        logger.warning("roster: device %s has no officer_id string; entry ignored", device)
        return None
    values: dict[str, str] = {k: v for k in FIELDS if isinstance(v := entry.get(k), str)}
    if not values["officer_id"].strip():
        logger.warning("roster: device %s has a blank officer_id; entry ignored", device)
        return None
    return Assignment(**values)


def parse_roster(doc: Any) -> dict[str, Assignment]:
    """device_id -> Assignment from a roster document; RosterError when its shape is wrong."""
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), dict):
        raise RosterError("expected a JSON object with a 'devices' object")
    out: dict[str, Assignment] = {}
    for device, entry in doc["devices"].items():
        assignment = _assignment(str(device), entry)
        if assignment is not None:
            out[str(device)] = assignment
    return out


def reconcile(identity: Identity, assignment: Assignment | None) -> RosterCheck:
    """Fill missing officer fields from the roster; a different officer is a finding, kept."""
    if assignment is None:
        return RosterCheck(identity)
    fields: dict[str, Any] = {"roster_officer_id": assignment.officer_id}
    if identity.officer_id and identity.officer_id != assignment.officer_id:
        fields["roster_officer_name"] = assignment.officer_name
        return RosterCheck(identity, fields, [OFFICER_MISMATCH])
    flags = [] if identity.officer_id else [OFFICER_FROM_ROSTER]
    filled = {k: getattr(assignment, k) for k in FIELDS if not getattr(identity, k)}
    return RosterCheck(replace(identity, **filled), fields, flags)


class Roster:
    """Daemon plugin: the last known roster, refreshed in a background thread."""

    def __init__(
        self, central: CentralSection, data_dir: Path, session: requests.Session | None = None
    ) -> None:
        """A roster for `central.roster_url`, cached under `data_dir`."""
        self.central = central
        self.cache_path = Path(data_dir) / CACHE_NAME
        self._session = session
        self.etag: str | None = None
        self.fetched_at: str | None = None
        self._devices: dict[str, Assignment] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lookups ----------------------------------------------------------------------------

    def lookup(self, device_id: str) -> Assignment | None:
        """The officer assigned to `device_id`, if the roster knows it."""
        with self._lock:
            return self._devices.get(device_id)

    def apply(self, identity: Identity) -> RosterCheck:
        """A docked recorder's identity checked against (and filled from) the roster."""
        check = reconcile(identity, self.lookup(identity.device_id))
        if OFFICER_MISMATCH in check.flags:
            logger.warning(
                "device %s reports officer %s but the roster says %s",
                identity.device_id,
                identity.officer_id,
                check.fields["roster_officer_id"],
                extra={"DEVICE_ID": identity.device_id},
            )
        return check

    def __len__(self) -> int:
        """How many devices the roster assigns."""
        with self._lock:
            return len(self._devices)

    # ---- plugin -----------------------------------------------------------------------------

    def start(self) -> None:
        """Load the cached roster, then refresh it in a background thread."""
        self.load_cache()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="roster", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.central.roster_timeout_s + 1)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            outcome = self.refresh()
            wait = self.central.roster_refresh_s
            self._stop.wait(wait if outcome != "failed" else min(wait, RETRY_S))

    # ---- cache ------------------------------------------------------------------------------

    def load_cache(self) -> bool:
        """Adopt the roster cached on disk (the dock works offline with it)."""
        try:
            cached = json.loads(self.cache_path.read_text(encoding="utf-8"))
            devices = parse_roster(cached.get("roster"))
        except FileNotFoundError:
            return False
        except (ValueError, AttributeError, RosterError) as exc:
            logger.warning(
                "roster cache %s unusable (%s); waiting for central", self.cache_path, exc
            )
            return False
        same_url = cached.get("url") == self.central.roster_url
        self._adopt(devices, cached.get("etag") if same_url else None, cached.get("fetched_at"))
        logger.info("roster: %d devices from the cache of %s", len(devices), self.fetched_at)
        return True

    def _adopt(self, devices: dict[str, Assignment], etag: Any, fetched_at: Any) -> None:
        with self._lock:
            self._devices = devices
            self.etag = etag if isinstance(etag, str) else None
            self.fetched_at = fetched_at if isinstance(fetched_at, str) else None

    # ---- fetching ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.etag:
            headers["If-None-Match"] = self.etag
        token = read_secret(self.central.roster_token_file)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def refresh(self) -> str:
        """One conditional GET: 'updated', 'not_modified' or 'failed' (the last roster stays)."""
        import requests  # here, not at import: only docks with a roster need it

        url = self.central.roster_url
        if self._session is None:
            self._session = requests.Session()
        try:
            resp = self._session.get(
                url, headers=self._headers(), timeout=self.central.roster_timeout_s
            )
            if resp.status_code == 304:
                return "not_modified"
            resp.raise_for_status()
            doc = resp.json()
            devices = parse_roster(doc)
        except (requests.RequestException, ValueError, RosterError, OSError) as exc:
            logger.warning("roster refresh from %s failed: %s; keeping the last roster", url, exc)
            return "failed"
        self._store(doc, devices, resp.headers.get("ETag"))
        return "updated"

    def _store(self, doc: Any, devices: dict[str, Assignment], etag: str | None) -> None:
        fetched_at = iso(utcnow())
        cache = {"url": self.central.roster_url, "etag": etag, "fetched_at": fetched_at}
        write_json(self.cache_path, {**cache, "roster": doc})
        self._adopt(devices, etag, fetched_at)
        logger.info("roster updated: %d devices", len(devices))


def annotate(record: dict[str, Any], roster: Roster | None) -> None:
    """Fill a new clip record's missing officer fields from the roster; flag a disagreement."""
    if roster is None:
        return
    identity = Identity(
        device_id=record["device_id"],
        officer_id=record.get("officer_id") or "",
        officer_name=record.get("officer_name") or "",
        unit_no=record.get("unit_no") or "",
    )
    check = roster.apply(identity)
    record.update(
        officer_id=check.identity.officer_id,
        officer_name=check.identity.officer_name,
        unit_no=check.identity.unit_no,
        **check.fields,
    )
    record["flags"] = sorted(set(record.get("flags") or []) | set(check.flags))
