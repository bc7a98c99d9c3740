"""The words table (agent/ui/i18n.py): a sentence in both languages for every code the product emits."""

from __future__ import annotations

import re

from agent.daemon.alerts import MANAGED
from agent.events import BAY_STATES
from agent.ui.i18n import LANGUAGES, TEXT, table, text
from tests.code_scan import emitted_codes

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_the_scan_finds_codes_made_every_way_the_code_base_makes_them() -> None:
    found = emitted_codes()
    # fault()/warning()/info(), RecorderError subclasses, super().__init__, BayFault/BayWaiting
    assert {"battery_impossible", "clock_drift", "battery_charging", "io_error"} <= found["finding"]
    assert {"mount_failed", "recorder_gone", "zfy_waiting_for_sdk", "zfy_ambiguous"} <= found[
        "finding"
    ]
    assert "zfy_wrong_password" in found["finding"]  # a table of SDK return codes
    # bus.alert("code", ...) and alert(CONSTANT, ...)
    assert {"sync_failed", "late_offload", "mqtt_auth_failed"} <= found["alert"]
    assert "receipt_invalid" in found["alert"]  # "receipt_invalid" if invalid else ...
    assert "fault" not in found["alert"]  # a severity is not a code


def test_every_emitted_code_and_bay_state_has_a_sentence() -> None:
    found = emitted_codes()
    codes = found["finding"] | found["alert"] | set(MANAGED)
    missing = sorted(c for c in codes if f"code.{c}" not in TEXT)
    assert not missing, f"add these codes to agent/ui/i18n.py TEXT: {missing}"
    states = [s for s in BAY_STATES if f"state.{s}" not in TEXT]
    assert not states, f"add these bay states to agent/ui/i18n.py TEXT: {states}"


def test_both_languages_are_written_and_neither_is_the_other() -> None:
    for key, (zh, en) in TEXT.items():
        assert zh.strip() and en.strip(), key
        if key.startswith(("state.", "code.")):
            assert CJK.search(zh), f"{key}: zh-CN {zh!r} has no Chinese"
            assert not CJK.search(en), f"{key}: en {en!r} has Chinese"


def test_lookups() -> None:
    assert text("state.ready", "zh-CN") == "就绪" and text("state.ready", "en") == "Ready"
    assert text("code.battery_impossible", "zh-CN").startswith("电池电量读数异常")
    assert text("code.never_heard_of", "en") == "never_heard_of"
    assert set(table("en")) == set(TEXT) and LANGUAGES == ("zh-CN", "en")
