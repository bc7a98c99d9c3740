"""Bay views are throttled, and the last one the throttle held back still goes out (SPEC 12)."""

from __future__ import annotations

import threading
import time

from agent.dock.emit import ThrottledSend


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
    time.sleep(0.5)
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
    time.sleep(0.5)
    assert sent.values == [1, 3]


def test_close_drops_a_pending_send() -> None:
    sent = Sent()
    emit = ThrottledSend(sent, 0.2)
    emit()
    emit()
    emit.close()
    time.sleep(0.4)
    assert sent.values == [0]
