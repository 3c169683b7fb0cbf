"""Fixtures for the Lark adapter: the fake open platform, fleet files whose bot
talks to it, and readers of what the engine stored."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.actors.config import FleetConfig
from callboard.testing.fake_lark import APP_ID, APP_SECRET, ENCRYPT_KEY, VERIFICATION_TOKEN, FakeLark
from tests import support
from tests.support import PIPELINE_ECHO as ECHO
from tests.support import RATE_LIMITS_OFF as UNLIMITED

LARK = support.PlatformBot(bot="lk", file="lark-test.yaml")
BOT = LARK.bot
running = LARK.running
stored_events = LARK.stored_events


def lark_fleet(
    tmp_path: Path,
    lark: FakeLark,
    *,
    mode: str = "ws",
    adapter: str = "",
    handlers: str = ECHO,
    port: int = 0,
    window: str = "0",
) -> FleetConfig:
    """A fleet with one Lark bot ``lk`` talking to ``lark``."""
    webhook = (
        f'verification_token: "{VERIFICATION_TOKEN}"\n'
        + (f'encrypt_key: "{lark.encrypt_key}"\n' if lark.encrypt_key else "")
        if mode == "webhook"
        else ""
    )
    adapter_block = (
        textwrap.dedent(
            f"""\
            type: lark
            app_id: {APP_ID}
            app_secret: "{APP_SECRET}"
            mode: {mode}
            domain: {lark.base_url}
            request_timeout: 5
            """
        )
        + webhook
        + UNLIMITED
        + "\n"
        + textwrap.dedent(adapter)
    )
    return LARK.fleet(tmp_path, adapter_block, handlers=handlers, port=port, window=window)


@pytest.fixture
async def lark() -> AsyncIterator[FakeLark]:
    async with support.serving(FakeLark().start()) as server:
        yield server


@pytest.fixture
async def lark_encrypted() -> AsyncIterator[FakeLark]:
    async with support.serving(FakeLark(encrypt_key=ENCRYPT_KEY).start()) as server:
        yield server


ANN = "ou_ann"
BOB = "ou_bob"
