"""Officer binding: the checks (pure), and the CLI's request queue to a daemon thread (real files)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from agent.daemon.requests import REQUEST_DIR, RequestFailed, RequestQueue, submit
from agent.dock.assign import AssignRefused, check_bay, parse_assignment
from agent.dock.bay import BayWorker
from agent.events import BayView


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"bay": True, "officer": "1"}, "bay must be a bay number"),
        ({"bay": "1", "officer": "1"}, "bay must be a bay number"),
        ({"bay": 1}, "officer id (--officer) is empty"),
        ({"bay": 1, "officer": "12_34"}, "letters and digits only"),
        ({"bay": 1, "officer": "1", "name": 5}, "name must be text"),
        ({"bay": 1, "officer": "1", "name": "名" * 17}, "34 bytes in GBK"),
        ({"bay": 1, "officer": "1", "unit": "单位编号很长很长"}, "unit number (--unit)"),
    ],
)
def test_an_assignment_that_cannot_be_written_is_refused(
    payload: dict[str, Any], needle: str
) -> None:
    with pytest.raises(AssignRefused) as info:
        parse_assignment(payload)
    assert needle in str(info.value)


def test_a_good_assignment_keeps_the_unit_unless_given() -> None:
    job = parse_assignment({"bay": 2, "officer": "654321", "name": "李四"})
    assert (job.bay, job.officer_id, job.name, job.unit_no) == (2, "654321", "李四", None)


def worker(state: str, docked: bool = True) -> BayWorker:
    view = BayView(1, state=state, device_id="ZFY12345" if docked else "")
    return cast(BayWorker, SimpleNamespace(view=view, recorder=object() if docked else None))


@pytest.mark.parametrize("state", ["identifying", "validating", "offloading", "fault"])
def test_refused_while_the_bay_offloads_or_is_in_fault(state: str) -> None:
    job = parse_assignment({"bay": 1, "officer": "654321"})
    with pytest.raises(AssignRefused) as info:
        check_bay(job, {1: worker(state)}, {1: "zfy"})
    assert f"bay 1 is {state}" in str(info.value)


def test_bay_checks_name_what_is_wrong() -> None:
    job = parse_assignment({"bay": 1, "officer": "654321"})
    assert check_bay(job, {1: worker("charging")}, {1: "zfy"}) == "ZFY12345"
    assert check_bay(job, {1: worker("ready")}, {1: "zfy"}) == "ZFY12345"
    cases = [
        ({2: worker("ready")}, {2: "zfy"}, "no bay 1 (bays: 2)"),
        ({1: worker("ready")}, {1: "mass_storage"}, "driver 'mass_storage'"),
        ({1: worker("empty", docked=False)}, {1: "zfy"}, "no recorder docked"),
    ]
    for workers, drivers, needle in cases:
        with pytest.raises(AssignRefused) as info:
            check_bay(job, workers, drivers)
        assert needle in str(info.value)


class Handler:
    """A handler with a check, recording what ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], str]] = []

    def check(self, payload: dict[str, Any]) -> None:
        if payload.get("bay") == 9:
            raise AssignRefused("no bay 9 (bays: 1)")

    def __call__(self, payload: dict[str, Any], by: str = "") -> dict[str, Any]:
        self.calls.append((payload, by))
        return {"bay": payload["bay"], "thread": threading.current_thread().name}


def test_requests_reach_the_daemon_thread_and_refusals_run_nothing(tmp_path: Path) -> None:
    handler = Handler()
    queue = RequestQueue(tmp_path, {"assign": handler}, poll_s=0.05)
    queue.start()
    try:
        result = submit(tmp_path, "assign", {"bay": 1, "officer": "1"}, "cli:root")
        assert result == {"bay": 1, "thread": "requests"}
        with pytest.raises(RequestFailed) as refused:
            submit(tmp_path, "assign", {"bay": 9, "officer": "1"}, "cli:root")
        assert "no bay 9" in str(refused.value)
        with pytest.raises(RequestFailed) as unknown:
            submit(tmp_path, "format", {}, "cli:root")
        assert "unknown command 'format'" in str(unknown.value)
    finally:
        queue.stop()
    assert handler.calls == [({"bay": 1, "officer": "1"}, "cli:root")]
    assert list((tmp_path / REQUEST_DIR).iterdir()) == [], "every request and reply collected"


def test_without_a_daemon_the_request_is_withdrawn_and_never_runs(tmp_path: Path) -> None:
    with pytest.raises(RequestFailed) as missing:
        submit(tmp_path, "assign", {"bay": 1}, "cli", claim_s=0.2)
    assert "has not run with this data_dir" in str(missing.value)
    handler = Handler()
    queue = RequestQueue(tmp_path, {"assign": handler})
    (tmp_path / REQUEST_DIR).mkdir()  # a daemon ran here once, and is not running now
    with pytest.raises(RequestFailed) as gone:
        submit(tmp_path, "assign", {"bay": 1, "officer": "1"}, "cli", claim_s=0.3)
    assert "did not take the request" in str(gone.value) and "nothing was done" in str(gone.value)
    assert queue.poll() == 0 and handler.calls == []  # a daemon starting later runs nothing


def test_a_malformed_request_file_gets_an_error_reply(tmp_path: Path) -> None:
    queue = RequestQueue(tmp_path, {"assign": Handler()})
    (tmp_path / REQUEST_DIR).mkdir()
    rid = "0" * 32
    (tmp_path / REQUEST_DIR / f"{rid}.json").write_bytes(b"[not json")
    (tmp_path / REQUEST_DIR / "notes.txt").write_text("ignored")
    assert queue.poll() == 1
    reply = (tmp_path / REQUEST_DIR / f"{rid}.reply.json").read_text()
    assert '"ok": false' in reply


def test_a_request_taken_by_a_daemon_that_stopped_is_answered_at_the_next_start(
    tmp_path: Path,
) -> None:
    folder = tmp_path / REQUEST_DIR
    folder.mkdir()
    rid = "1" * 32
    (folder / f"{rid}.taken").write_text('{"command": "assign", "payload": {}}')
    handler = Handler()
    queue = RequestQueue(tmp_path, {"assign": handler})
    assert queue.orphans() == 1 and handler.calls == [], "never run twice"
    reply = (folder / f"{rid}.reply.json").read_text()
    assert "stopped before answering" in reply and not (folder / f"{rid}.taken").exists()
