"""Bay views are throttled, and the last one the throttle held back still goes out (SPEC 12)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent.dock.emit import ThrottledSend
from firmware_interface import simkit
from tests.dock import count_status_reads, dock_config, running, settled, wait_for


class Sent:
    def __init__(self) -> None:
        self.values: list[int] = []
        self.current = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.values.append(self.current)


def test_the_last_update_held_back_goes_out_within_the_interval() -> None:
    sent = Sent()
    emit = ThrottledSend(sent, 0.2)
    for value in range(1, 6):  # five quick progress updates, then the copy stalls
        sent.current = value
        emit()
    assert sent.values == [1]
    wait_for(lambda: len(sent.values) > 1, 5, "the trailing send")
    assert sent.values == [1, 5]  # one trailing send, with what is current then
    emit.close()


def test_forced_sends_go_at_once_and_cancel_the_trailing_one() -> None:
    sent = Sent()
    emit = ThrottledSend(sent, 0.2)
    sent.current = 1
    emit()
    sent.current = 2
    emit()  # held back
    sent.current = 3
    emit(force=True)  # a state change: at once
    time.sleep(0.5)  # no-event wait: 2.5 intervals; the cancelled trailing send was due after 1
    assert sent.values == [1, 3]


def test_close_drops_a_pending_send() -> None:
    sent = Sent()
    emit = ThrottledSend(sent, 0.2)
    emit()
    emit()
    emit.close()
    time.sleep(0.4)  # no-event wait: 2 intervals; the dropped send was due after 1
    assert sent.values == [0]


def test_a_charging_battery_is_a_whole_percent_and_its_fractions_are_no_news(
    tmp_path: Path,
) -> None:
    """Every refresh reads the battery; only a change people can see is published again."""
    rec = simkit.SimRecorder(battery_pct=80.4, charge_pct_per_min=0.6, clips=[])
    simkit.build(tmp_path / "bay1", rec)
    with running(dock_config(tmp_path), refresh_s=0.1) as (daemon, views):
        wait_for(lambda: settled(daemon, views, 1), 30, "bay 1 charging")
        reads = count_status_reads(daemon.bays[1].recorder)
        wait_for(lambda: reads[0] >= 3, 10, "3 refreshes")  # views held back at settling went out
        before = len(views.items)
        wait_for(lambda: reads[0] >= 23, 20, "20 more refreshes")  # the battery gains 0.02 %
        after = views.items[before:]
    assert views.latest(1).battery_pct == 80  # type: ignore[union-attr]
    assert after == [], [v.battery_pct for v in after]
