"""The suite's guard (tests/conftest.py): a test fails when the code under test logs an
exception it swallowed, from any thread, unless the test is marked as provoking it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[1]

SWALLOWING = """
import logging
import threading

from pathlib import Path

import pytest

logger = logging.getLogger("agent.somewhere")


def swallow() -> None:
    try:
        raise ValueError("lost in a callback")
    except Exception:
        logger.exception("callback failed")


def test_in_a_thread() -> None:
    t = threading.Thread(target=swallow)
    t.start()
    t.join()


def test_plain_errors_are_not_exceptions() -> None:
    logger.error("a refusal, no traceback")


@pytest.mark.logs_exception(reason="provoked and asserted")
def test_marked(caplog: pytest.LogCaptureFixture) -> None:
    swallow()
    assert caplog.records[0].exc_info


@pytest.mark.logs_exception
def test_marked_without_a_reason() -> None:
    pass
"""


def test_a_swallowed_exception_fails_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest(
        "from tests.conftest import fail_on_logged_exception, pytest_configure  # noqa: F401\n"
    )
    pytester.makepyfile(SWALLOWING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # its logs stay its own
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*the code under test logged 1 exception(s) it swallowed*",
            "*agent.somewhere: callback failed*",
            "*ValueError: lost in a callback*",
            "*@pytest.mark.logs_exception needs a reason*",
        ]
    )
