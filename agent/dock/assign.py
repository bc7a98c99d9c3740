"""Officer binding (SPEC 5): write the officer into a docked zfy recorder through its SDK.

One handler serves the MQTT command `assign` and `dock-agent assign` (through the request
queue): the request is checked completely first (the bay, its state, every text against the
recorder's field sizes), then the write runs on the bay's own thread, between its events,
and is logged in the custody log as `recorder_assigned`. Refused while the bay identifies,
validates or offloads, or is in fault: clips still on the recorder were recorded by the
officer it is bound to now, and are filed under that officer when they are offloaded.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, cast

from agent.dock.bay import BayTask, BayWorker
from agent.evidence.custody import CustodyLog
from firmware_interface.base import Identity, RecorderError
from firmware_interface.zfy_officer import OfficerTextError, check_officer_id, field_bytes

logger = logging.getLogger(__name__)

ASSIGNABLE_STATES = ("charging", "ready")
WAIT_S = 30.0  # for the bay thread to run the write (it may be refreshing its status)


class AssignRefused(ValueError):
    """An assignment that cannot be done; the message says why, nothing was written."""


class Writable(Protocol):
    """A recorder that can be bound to an officer (the zfy driver)."""

    def write_officer(self, officer_id: str, name: str, unit_no: str | None) -> Identity:
        """Write the officer; the identity read back."""
        ...


@dataclass(frozen=True)
class Assignment:
    """Who a bay's recorder is to be bound to."""

    bay: int
    officer_id: str
    name: str = ""
    unit_no: str | None = None


def parse_assignment(payload: dict[str, Any]) -> Assignment:
    """An Assignment from {"bay", "officer", "name"?, "unit"?}; AssignRefused naming the field."""
    bay = payload.get("bay")
    if type(bay) is not int:
        raise AssignRefused(f"bay must be a bay number, not {bay!r:.40}")
    texts = {k: payload.get(k) for k in ("officer", "name", "unit")}
    for key, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise AssignRefused(f"{key} must be text, not {value!r:.40}")
    job = Assignment(bay, texts["officer"] or "", texts["name"] or "", texts["unit"])
    try:
        check_officer_id(job.officer_id)
        field_bytes("userName", job.name)
        if job.unit_no is not None:
            field_bytes("unitNo", job.unit_no)
    except OfficerTextError as exc:
        raise AssignRefused(str(exc)) from None
    return job


def check_bay(job: Assignment, workers: dict[int, BayWorker], drivers: dict[int, str]) -> str:
    """The device id of the recorder the job would bind; AssignRefused when it cannot be."""
    worker = workers.get(job.bay)
    if worker is None:
        known = ", ".join(str(n) for n in sorted(workers)) or "none"
        raise AssignRefused(f"no bay {job.bay} (bays: {known})")
    if drivers.get(job.bay) != "zfy":
        raise AssignRefused(
            f"bay {job.bay} uses driver {drivers.get(job.bay)!r}: only zfy recorders take an "
            "officer (through the SDK's WriteZFYInfo)"
        )
    view = worker.view
    if worker.recorder is None or view.state == "empty":
        raise AssignRefused(f"bay {job.bay}: no recorder docked")
    if view.state not in ASSIGNABLE_STATES:
        raise AssignRefused(
            f"bay {job.bay} is {view.state}: assign once its clips are offloaded "
            "(the bay shows charging or ready)"
        )
    return view.device_id or ""


class Assigner:
    """The `assign` handler: `check` refuses without writing anything; calling it writes."""

    def __init__(
        self, workers: dict[int, BayWorker], drivers: dict[int, str], custody: CustodyLog
    ) -> None:
        self.workers = workers
        self.drivers = drivers
        self.custody = custody

    def check(self, payload: dict[str, Any]) -> None:
        """Everything that can be known before the write (AssignRefused says what is wrong)."""
        check_bay(parse_assignment(payload), self.workers, self.drivers)

    def __call__(self, payload: dict[str, Any], by: str = "mqtt") -> dict[str, Any]:
        """Bind the bay's recorder; the officer as read back from the recorder."""
        job = parse_assignment(payload)
        device_id = check_bay(job, self.workers, self.drivers)
        done: Future[dict[str, Any]] = Future()

        def run(worker: BayWorker) -> None:
            try:
                done.set_result(self._write(worker, job, device_id, by))
            except Exception as exc:  # handed to the requester, whatever it is
                done.set_exception(exc)

        self.workers[job.bay].post(BayTask(run))
        try:
            return done.result(WAIT_S)
        except TimeoutError:
            raise RecorderError(
                "assign_timeout", f"bay {job.bay} did not run the assignment in {WAIT_S:.0f} s"
            ) from None

    def _write(self, worker: BayWorker, job: Assignment, device_id: str, by: str) -> dict[str, Any]:
        """On the bay's thread: the same recorder still there and idle, then the write."""
        now = check_bay(job, self.workers, self.drivers)
        recorder = worker.recorder
        if now != device_id:
            raise AssignRefused(f"bay {job.bay} now holds {now!r}, not {device_id!r}")
        if not hasattr(recorder, "write_officer"):
            raise AssignRefused(f"bay {job.bay}: this recorder cannot be written through the SDK")
        writable = cast(Writable, recorder)
        before = worker.view.officer_id
        identity = writable.write_officer(job.officer_id, job.name, job.unit_no)
        entry = self.custody.append(
            "recorder_assigned",
            device_id=identity.device_id,
            bay=job.bay,
            officer_id=identity.officer_id,
            officer_name=identity.officer_name,
            unit_no=identity.unit_no,
            unit_name=identity.unit_name,
            previous_officer_id=before,
            by=by,
        )
        worker.show(officer_id=identity.officer_id)
        logger.info(
            "bay %s: recorder %s assigned to officer %s by %s",
            job.bay,
            identity.device_id,
            identity.officer_id,
            by,
            extra={"BAY": job.bay, "DEVICE_ID": identity.device_id},
        )
        return {
            "bay": job.bay,
            "device_id": identity.device_id,
            "officer_id": identity.officer_id,
            "officer_name": identity.officer_name,
            "unit_no": identity.unit_no,
            "unit_name": identity.unit_name,
            "previous_officer_id": before,
            "custody_seq": entry["seq"],
        }
