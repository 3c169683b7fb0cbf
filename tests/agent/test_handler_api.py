"""RunAPI, the HandlerAPI a handler gets: calls go through the bot's Outlet (retries
on transient errors), non-idempotent ones get receipts a replayed run skips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from callboard.actors.handler_api import RunAPI
from callboard.actors.outbound import Outlet
from callboard.actors.runtime import BotCounters
from callboard.engine.clock import LoopClock
from callboard.engine.events import SessionKey
from callboard.engine.journal import Journal
from callboard.engine.platform import MessageResult, NotSupportedError, PlatformAction, PlatformAPI, SendError

KEY = SessionKey("b", "group", "g1")


class Platform(PlatformAPI):
    adapter_name: ClassVar[str] = "fake"
    platform_actions: ClassVar[tuple[PlatformAction, ...]] = (PlatformAction(action="pin"),)

    def __init__(self) -> None:
        self.pins: list[str] = []
        self.forwards = 0
        self.reactions = 0
        self.flaky = 1

    async def platform_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.flaky:
            self.flaky -= 1
            raise SendError("busy", permanent=False, retry_after=0.01)
        self.pins.append(params["message_id"])
        return {"pinned": params["message_id"]}

    async def forward_message(
        self, from_chat_type: str, from_chat_id: str, message_id: str, to_chat_type: str, to_chat_id: str
    ) -> MessageResult:
        self.forwards += 1
        return MessageResult(message_id=f"f{self.forwards}")

    async def add_reaction(self, chat_type: str, chat_id: str, message_id: str, reaction: str) -> None:
        self.reactions += 1


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    store = Journal(str(tmp_path / "j.sqlite3"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def runtime(platform: Platform, journal: Journal) -> Any:
    counters = BotCounters()
    outlet = Outlet("b", platform, journal, counters, platform.rate_limits, LoopClock())
    return SimpleNamespace(bot_id="b", api=platform, journal=journal, outlet=outlet, counters=counters)


async def test_calls_retry_and_receipted_ones_are_skipped_on_replay(journal: Journal) -> None:
    platform = Platform()
    bot = runtime(platform, journal)
    first = RunAPI(bot, KEY, run_id=7, replayed=False)
    assert await first.call("call_platform_api", action="pin", params={"message_id": "m1"}) == {
        "pinned": "m1"
    }
    forwarded = await first.call(
        "forward_message",
        from_chat_type="group",
        from_chat_id="g1",
        message_id="m1",
        to_chat_type="group",
        to_chat_id="g2",
    )
    await first.call("add_reaction", chat_type="group", chat_id="g1", message_id="m1", reaction="+1")
    assert bot.counters.send_retries == 1 and first.calls_made == 2  # the reaction is not receipted
    await journal.flush()

    again = RunAPI(bot, KEY, run_id=7, replayed=True)  # the same run after a crash
    assert await again.call("call_platform_api", action="pin", params={"message_id": "m1"}) == {
        "skipped": "already done before a restart"
    }
    repeat = await again.call(
        "forward_message",
        from_chat_type="group",
        from_chat_id="g1",
        message_id="m1",
        to_chat_type="group",
        to_chat_id="g2",
    )
    await again.call("add_reaction", chat_type="group", chat_id="g1", message_id="m1", reaction="+1")
    assert platform.pins == ["m1"] and platform.forwards == 1 and platform.reactions == 2
    assert repeat == forwarded == MessageResult(message_id="f1")
    assert bot.counters.receipts_skipped == 2


async def test_what_a_handler_may_not_call(journal: Journal) -> None:
    api = RunAPI(runtime(Platform(), journal), KEY, run_id=1, replayed=False)
    with pytest.raises(ValueError, match="use send"):
        await api.call("send_message", chat_type="group", chat_id="g1")
    with pytest.raises(NotSupportedError):
        await api.call("kick_member", group_id="g1", user_id="u1")
    assert api.supports("add_reaction") and not api.supports("kick_member")
