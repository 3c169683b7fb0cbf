"""Fixtures for the Telegram adapter: the fake Bot API, fleet files whose bot
talks to it, and readers of what the engine stored."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import telegram as tg

from callboard.actors.config import FleetConfig
from callboard.actors.config_file import parse_fleet
from callboard.app import Running, start
from callboard.engine.events import Event, SessionKey, decode_event
from callboard.testing.fake_telegram import TOKEN, FakeBotAPI, user

BOT = "tg"

ECHO = """
- event_type: message.received
  handler_type: pipeline
  handler_config: {stages: [{type: command}, {type: echo}]}
"""

#: Telegram's limits off, so tests that are not about throttling run at full speed
UNLIMITED = (
    "rate_limits: {per_bot_per_second: 0, per_private_chat_per_second: 0, per_group_chat_per_minute: 0}"
)


def telegram_fleet(
    tmp_path: Path,
    api: FakeBotAPI,
    *,
    adapter: str = UNLIMITED,
    handlers: str = ECHO,
    port: int = 0,
    token: str = TOKEN,
    window: str = "0",
) -> FleetConfig:
    """A fleet with one Telegram bot ``tg`` polling ``api`` (1 s long polls)."""
    adapter_lines = textwrap.indent(
        textwrap.dedent(
            f"""\
            type: telegram
            token: "{token}"
            base_url: {api.base_url}
            poll_timeout: 1
            request_timeout: 2
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
        "    handlers:"
        + ("\n" + textwrap.indent(textwrap.dedent(handlers).strip(), "      ") if handlers else " []")
        + "\n"
    )
    return parse_fleet(text, "telegram-test.yaml")


@contextlib.asynccontextmanager
async def running(config: FleetConfig) -> AsyncIterator[Running]:
    """The fleet on the port its file names (a webhook URL needs it up front)."""
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


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    server = await FakeBotAPI().start()
    try:
        yield server
    finally:
        await server.close()


async def stored_events(fleet: Running) -> list[Event]:
    rows = await fleet.journal.query("SELECT payload FROM events WHERE bot=? ORDER BY seq", (BOT,))
    return [decode_event(payload) for (payload,) in rows]


def me() -> tg.User:
    return tg.User(
        id=int(TOKEN.split(":")[0]), first_name="Callboard Test", is_bot=True, username="callboard_test_bot"
    )


def people() -> dict[str, dict[str, Any]]:
    return {
        "ann": user(1001, "Ann", username="ann", last_name="Lee", language_code="en"),
        "bob": user(1002, "Bob", username="bob"),
        "cy": user(1003, "Cy"),
    }
