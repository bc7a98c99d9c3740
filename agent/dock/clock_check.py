"""A docked recorder's clock: measured against the dock's, set when allowed, noted (SPEC 1 step 2)."""

from __future__ import annotations

from agent.dock.checks import check_clock
from agent.dock.parts import DockParts
from agent.findings import Finding, fault, info
from agent.timebase import local_now, utcnow
from firmware_interface.base import Recorder, RecorderError, RecorderGone, Status


class ClockCheck:
    """One docking's clock check: custody entries, findings, alerts, and the clock set."""

    def __init__(self, services: DockParts, bay: int, recorder: Recorder, device_id: str) -> None:
        self.s = services
        self.bay = bay
        self.recorder = recorder
        self.device_id = device_id
        self.findings: list[Finding] = []

    def run(self, status: Status, findings: list[Finding]) -> float | None:
        """Check the clock, set it when allowed; findings are added to `findings`."""
        recorder, device_id = self.recorder, self.device_id
        self.findings = findings
        now = utcnow()
        verdict = check_clock(
            status, recorder.capabilities, now, self.s.tz, self.s.cfg.policy, self.s.clock()
        )
        self.s.custody.append(
            "clock_checked",
            device_id=device_id,
            offset_s=verdict.offset_s,
            tolerance_s=self.s.cfg.policy.clock_tolerance_s,
            recorder_clock=status.clock.isoformat() if status.clock else None,
        )
        self.findings.extend(verdict.findings)
        unsynced = next((f for f in verdict.findings if f.code == "clock_unsynced"), None)
        if unsynced is not None:
            self.s.bus.alert(
                "clock_unsynced",
                "warning",
                f"dock clock not synchronised ({unsynced.detail['reason']}): "
                "recorder clocks are not set",
                bay=self.bay,
                device_id=device_id,
                source=unsynced.detail["source"],
            )
        if verdict.set_clock:
            self._set_clock(recorder, device_id, verdict.offset_s)
        elif any(f.code == "clock_drift" for f in self.findings):
            self._escalate_drift()
        return verdict.offset_s

    def _set_clock(self, recorder: Recorder, device_id: str, offset: float | None) -> None:
        try:
            recorder.set_clock(local_now(self.s.tz))
        except RecorderGone:
            raise
        except RecorderError as exc:
            self.findings.append(
                fault("clock_set_failed", f"setting the recorder clock failed: {exc}")
            )
            return
        self.s.custody.append(
            "clock_set",
            device_id=device_id,
            offset_before_s=offset,
            set_to=utcnow().isoformat(timespec="seconds"),
        )
        self.findings[:] = [f for f in self.findings if f.code != "clock_drift"]
        self.findings.append(
            info(
                "clock_corrected",
                f"recorder clock corrected by {-(offset or 0):+.1f} s"
                if offset is not None
                else "recorder clock set",
                offset_s=offset,
            )
        )
        self.s.bus.event("clock_corrected", bay=self.bay, device_id=device_id, offset_s=offset)

    def _escalate_drift(self) -> None:
        drift = next(f for f in self.findings if f.code == "clock_drift")
        self.findings.remove(drift)
        self.findings.append(
            fault("clock_drift", f"{drift.message}; not corrected", **drift.detail)
        )
