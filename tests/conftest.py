"""Shared pytest set-up: assertion rewriting for the helper plugins the test modules load."""

import pytest

pytest.register_assert_rewrite(
    "tests.loopdev", "tests.zfy_kit", "tests.transfer_kit", "tests.emqx.fixture"
)
