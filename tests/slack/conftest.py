"""Fixtures for the Slack adapter: the fake Slack, fleet files whose bot talks
to it (Socket Mode or the Events API), and readers of what the engine stored."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callboard.actors.config import FleetConfig
from callboard.actors.config_file import parse_fleet
from callboard.app import Running, start
from callboard.engine.events import Event, SessionKey, decode_event
from callboard.testing.fake_slack import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, FakeSlack

BOT = "sl"
ANN, BOB = "U0ANN", "U0BOB"
GENERAL = "C0GENERAL"
SECRET_ROOM = "G0SECRET"

ECHO = """
- event_type: message.received
  handler_type: pipeline
  handler_config: {stages: [{type: command}, {type: echo}]}
"""

#: Slack's limits off, so tests that are not about throttling run at full speed
UNLIMITED = """\
rate_limits: {per_bot_per_second: 0, per_private_chat_per_second: 0, per_group_chat_per_minute: 0}
tier_limits: false
"""


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
    adapter_lines = textwrap.indent(
        textwrap.dedent(
            f"""\
            type: slack
            mode: {mode}
            bot_token: "{BOT_TOKEN}"
            app_token: "{APP_TOKEN}"
            signing_secret: "{SIGNING_SECRET}"
            base_url: {slack.base_url}
            ping_interval: 0.5
            request_timeout: {request_timeout}
            """
        )
        + textwrap.dedent(adapter).strip()
        + "\n",
        " " * 6,
    )
    text = (
        f"name: test\nengine:\n  journal: {tmp_path / 'journal.sqlite3'}\n"
        f"  admin: {{host: 127.0.0.1, port: {port}}}\n  shutdown_timeout: 10s\n"
        f"bots:\n  - id: {BOT}\n    adapter:\n{adapter_lines}"
        f"    session:\n      debounce: {{window: {window}, max_wait: 10s}}\n"
        + (f"      {session}\n" if session else "")
        + "    handlers:"
        + ("\n" + textwrap.indent(textwrap.dedent(handlers).strip(), "      ") if handlers else " []")
        + "\n"
    )
    return parse_fleet(text, "slack-test.yaml")


@contextlib.asynccontextmanager
async def running(config: FleetConfig) -> AsyncIterator[Running]:
    fleet = await start(config)
    try:
        yield fleet
    finally:
        await fleet.stop()


def stall_appends(monkeypatch: pytest.MonkeyPatch, fleet: Running, *, seconds: float, count: int) -> None:
    """Fault injection: the next ``count`` journal appends take ``seconds`` to become durable."""
    loop = asyncio.get_running_loop()
    real_append = fleet.journal.append
    left = count

    def stalled_append(event: Event, session: SessionKey) -> asyncio.Future[int | None]:
        nonlocal left
        inner = real_append(event, session)
        if left == 0:
            return inner
        left -= 1
        outer: asyncio.Future[int | None] = loop.create_future()
        loop.call_later(seconds, inner.add_done_callback, lambda done: outer.set_result(done.result()))
        return outer

    monkeypatch.setattr(fleet.journal, "append", stalled_append)


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
    server = await FakeSlack().start()
    workspace(server)
    try:
        yield server
    finally:
        await server.close()


async def stored_events(fleet: Running) -> list[Event]:
    rows = await fleet.journal.query("SELECT payload FROM events WHERE bot=? ORDER BY seq", (BOT,))
    return [decode_event(payload) for (payload,) in rows]


def texts(slack: FakeSlack) -> list[str]:
    return [str(c.get("text")) for c in slack.answered("chat.postMessage")]
