"""Streaming edits on the engine's clock: one edit per interval at most, a trailing
edit after a burst, the final text always shown (a ManualClock, no sleeping)."""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.engine.clock import ManualClock
from callboard.engine.entities import MessageChain
from callboard.engine.events import SessionKey
from callboard.engine.platform import MessageResult
from callboard.handlers.agent.stream import ReplyStream, split
from callboard.handlers.context import HandlerContext


class EditingAPI:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.edits: list[str] = []

    def supports(self, api: str) -> bool:
        return api == "edit_message"

    @property
    def max_text_length(self) -> int | None:
        return None

    @property
    def calls_made(self) -> int:
        return len(self.sent)

    def resume_after(self, calls: int) -> None:
        return None

    async def send(self, chat_type: str, chat_id: str, message: MessageChain, **_: Any) -> MessageResult:
        self.sent.append(message.text)
        return MessageResult(message_id="b1")

    async def call(self, api: str, **params: Any) -> Any:
        assert api == "edit_message" and params["message_id"] == "b1"
        self.edits.append(params["new_content"].text)


def stream(clock: ManualClock, api: EditingAPI, interval: float = 1.0) -> ReplyStream:
    async def state() -> dict[str, Any]:
        return {}

    async def save(value: dict[str, Any]) -> None:
        return None

    ctx = HandlerContext(
        bot_id="b",
        session=SessionKey("b", "private", "c1"),
        events=[],
        run_id=1,
        api=api,
        clock=clock,
        load_state=state,
        save_state=save,
        stats=dict,
    )
    return ReplyStream(ctx, stream=True, interval=interval)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_burst_then_a_pause_is_shown_by_one_trailing_edit() -> None:
    clock, api = ManualClock(), EditingAPI()
    reply = stream(clock, api)
    await reply.delta(" ")  # blank: nothing sent yet
    assert api.sent == []
    await reply.delta("Hello")
    assert api.sent == [" Hello"]
    await clock.advance(0.1)
    await reply.delta(",")
    await reply.delta(" wor")
    await settle()
    assert api.edits == []  # inside the interval: stored, one edit armed
    await clock.advance(0.9)  # the interval is up; no new token came
    await settle()
    assert api.edits == [" Hello, wor"]
    await reply.delta("ld")
    await reply.finish("Hello, world")
    assert api.edits == [" Hello, wor", "Hello, world"]
    assert reply.edits == 2


async def test_finish_cancels_a_pending_edit() -> None:
    clock, api = ManualClock(), EditingAPI()
    reply = stream(clock, api)
    await reply.delta("a")
    await reply.delta("b")
    await reply.finish("ab!")
    await clock.advance(5)
    await settle()
    assert api.sent == ["a"] and api.edits == ["ab!"]


def test_split_prefers_line_and_word_breaks() -> None:
    assert split("one two three four five", 12) == ["one two", "three four", "five"]
    assert split("line one\nline two", 12) == ["line one", "line two"]
    assert split("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert split("short", None) == ["short"]
