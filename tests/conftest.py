"""Shared pytest set-up: assertion rewriting for the helper plugins the test modules load, a
test fails when the code under test logs an exception it swallowed, and the clips ffmpeg
makes are made once per session (tests/media_cache.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from firmware_interface import simkit
from tests.media_cache import ClipCache

pytest.register_assert_rewrite(
    "tests.loopdev", "tests.zfy_kit", "tests.transfer_kit", "tests.emqx.fixture"
)

LOGS_EXCEPTION = "logs_exception"


@pytest.fixture(scope="session", autouse=True)
def clip_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipCache]:
    """Every clip simkit makes (make_video, make_photo, make_wav, tests/media.py) is encoded
    once per session and copied into place after that."""
    cache = ClipCache(tmp_path_factory.mktemp("clip-cache"), simkit.lavfi)
    patch = pytest.MonkeyPatch()
    patch.setattr(simkit, "lavfi", cache.lavfi)
    yield cache
    patch.undo()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{LOGS_EXCEPTION}(reason): the test provokes an exception that the code under test logs "
        "(logger.exception, or ERROR with exc_info) on purpose and asserts it; reason says which",
    )


class SwallowedExceptions(logging.Handler):
    """Collects records at ERROR or above that carry an exception (logger.exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            self.records.append(record)

    def report(self) -> str:
        """Each record's logger, message and exception, for the failure message."""
        formatter = logging.Formatter("%(name)s: %(message)s")
        return "\n\n".join(formatter.format(r) for r in self.records)


@pytest.fixture(autouse=True)
def fail_on_logged_exception(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test whose code under test logged an exception it swallowed (as Home Assistant's
    suite does): a callback, worker thread or event handler that catches everything and logs
    it would otherwise let the test pass while something broke. A test that provokes such a
    record on purpose says so with `@pytest.mark.logs_exception(reason=...)` and asserts it."""
    marker = request.node.get_closest_marker(LOGS_EXCEPTION)
    if marker is not None:
        if not (marker.kwargs.get("reason") or marker.args):
            pytest.fail(f"@pytest.mark.{LOGS_EXCEPTION} needs a reason")
        yield
        return
    handler = SwallowedExceptions()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
    if handler.records:
        pytest.fail(
            f"the code under test logged {len(handler.records)} exception(s) it swallowed "
            f"(mark the test @pytest.mark.{LOGS_EXCEPTION}(reason=...) if it provokes them "
            f"on purpose and asserts them):\n\n{handler.report()}",
            pytrace=False,
        )
