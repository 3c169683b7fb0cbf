"""Fixtures for the Slack adapter: the fake Slack, fleet files whose bot talks
to it (Socket Mode or the Events API), and readers of what the engine stored."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.actors.config import FleetConfig
from callboard.testing.fake_slack import FakeSlack
from tests import support
from tests.support import PIPELINE_ECHO as ECHO
from tests.support import RATE_LIMITS_OFF

SLACK = support.PlatformBot(bot="sl", file="slack-test.yaml")
BOT = SLACK.bot
running = SLACK.running
stored_events = SLACK.stored_events
ANN, BOB = "U0ANN", "U0BOB"
GENERAL = "C0GENERAL"
SECRET_ROOM = "G0SECRET"

#: Slack's limits (outbound and method tiers) off, so tests that are not about throttling run at full speed
UNLIMITED = f"{RATE_LIMITS_OFF}\ntier_limits: false\n"


def slack_fleet(
    tmp_path: Path,
    slack: FakeSlack,
    *,
    mode: str = "socket",
    adapter: str = UNLIMITED,
    handlers: str = ECHO,
    port: int = 0,
    window: str = "0",
    session: str = "",
    request_timeout: str = "5",
) -> FleetConfig:
    """A fleet with one Slack bot ``sl`` on ``slack`` (half-second pings)."""
    adapter_block = (
        slack.adapter_yaml(mode)
        + f"ping_interval: 0.5\nrequest_timeout: {request_timeout}\n"
        + textwrap.dedent(adapter)
    )
    return SLACK.fleet(tmp_path, adapter_block, handlers=handlers, port=port, window=window, session=session)


def workspace(slack: FakeSlack) -> FakeSlack:
    """Ann and Bob; #general (public, with both and the bot), a private channel, DMs."""
    slack.add_user(ANN, "ann", real_name="Ann Lee")
    slack.add_user(BOB, "bob")
    slack.add_channel(GENERAL, "general", members=[ANN, BOB])
    slack.add_channel(SECRET_ROOM, "secret", kind="group", members=[ANN])
    slack.im(ANN)
    slack.im(BOB)
    return slack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with support.serving(FakeSlack().start()) as server:
        yield workspace(server)


def texts(slack: FakeSlack) -> list[str]:
    return [str(c.get("text")) for c in slack.answered("chat.postMessage")]
