"""The domain's events (pure, no threads): the one record of active alerts, and the clip flow."""

from __future__ import annotations

import logging

import pytest

from agent.events import ActiveAlerts, Alert, Analysed, BayView, ClipFlow, DockEvent, Synced


def test_active_alerts_raise_keep_the_latest_and_clear() -> None:
    alerts = ActiveAlerts()
    assert alerts.on_item(Alert("disk_low", "warning", "9% free"))
    assert not alerts.on_item(Alert("disk_low", "warning", "8% free")), "same set of codes"
    assert alerts.documents()[0]["message"] == "8% free"
    assert not alerts.on_item(Alert("late_offload", "warning", "one clip", {"one_off": True}))
    assert not alerts.on_item(Alert("note", "info", "a notice"))
    assert not alerts.on_item(BayView(1)) and not alerts.on_item(DockEvent("docked", {}))
    assert alerts.on_item(Alert("clock_unsynced", "warning", "not synchronised"))
    assert alerts.codes() == ["clock_unsynced", "disk_low"]
    assert alerts.on_item(Alert("disk_low", "clear", "disk_low no longer holds"))
    assert alerts.on_item(Alert("clock_unsynced", "warning", "ok", {"cleared": True}))
    assert alerts.codes() == [] and alerts.documents() == []


def test_the_flow_hands_each_step_to_the_handlers_of_its_kind_only() -> None:
    flow = ClipFlow()
    analysed: list[Analysed] = []
    synced: list[Synced] = []
    flow.subscribe(Analysed, analysed.append)
    flow.subscribe(Synced, synced.append)
    flow.subscribe(Synced, lambda step: synced.append(step))
    flow.publish(Analysed(("a", "b")))
    flow.publish(Synced("a", "ZFY0012345"))
    assert analysed == [Analysed(("a", "b"))]
    assert synced == [Synced("a", "ZFY0012345")] * 2


@pytest.mark.logs_exception(reason="a handler that raises, on purpose; the log is asserted")
def test_a_failing_handler_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flow = ClipFlow()
    got: list[Synced] = []

    def broken(_step: Synced) -> None:
        raise RuntimeError("boom")

    flow.subscribe(Synced, broken)
    flow.subscribe(Synced, got.append)
    with caplog.at_level(logging.ERROR, logger="agent.events"):
        flow.publish(Synced("a", "ZFY0012345"))
    assert got == [Synced("a", "ZFY0012345")]
    assert "clip step handler failed on Synced" in caplog.text
