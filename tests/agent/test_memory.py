"""Memory bounds and summaries, and streaming where the chat cannot edit (handler level)."""

from __future__ import annotations

from typing import Any

import pytest

from callboard.engine.clock import LoopClock
from callboard.engine.entities import MessageChain, User
from callboard.engine.events import MessageReceived, SessionKey
from callboard.engine.platform import MessageResult
from callboard.handlers.agent.config import AgentConfig, MemoryConfig
from callboard.handlers.agent.handler import AgentHandler
from callboard.handlers.agent.memory import Memory
from callboard.handlers.context import HandlerContext
from callboard.testing.fake_openai import FakeOpenAI, Reply
from tests.support import API_KEY

pytestmark = pytest.mark.timeout(60)


def test_turns_and_token_budget_drop_the_oldest_exchanges() -> None:
    state: dict[str, Any] = {}
    memory = Memory(state, MemoryConfig(max_turns=2, max_tokens=0))
    assert memory.finish("a", "A") == []
    memory.finish("b", "B")
    dropped = memory.finish("c", "C")
    assert [t["content"] for t in dropped] == ["a", "A"]
    assert [t["content"] for t in state["agent"]["turns"]] == ["b", "B", "c", "C"]
    tight = Memory({}, MemoryConfig(max_turns=100, max_tokens=10))  # 40 characters
    tight.finish("x" * 20, "y" * 20)
    dropped = tight.finish("z" * 5, "w" * 5)
    assert [t["content"] for t in tight.turns] == ["zzzzz", "wwwww"] and len(dropped) == 2


def test_zero_turns_keeps_nothing() -> None:
    memory = Memory({}, MemoryConfig(max_turns=0))
    memory.finish("a", "A")
    assert memory.turns == []


class EditlessAPI:
    """A chat that cannot edit messages."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def supports(self, api: str) -> bool:
        return False

    @property
    def max_text_length(self) -> int | None:
        return 12

    async def send(self, chat_type: str, chat_id: str, message: MessageChain, **_: Any) -> MessageResult:
        self.sent.append(message.text)
        return MessageResult(message_id=f"b{len(self.sent)}")

    @property
    def calls_made(self) -> int:
        return len(self.sent)

    def resume_after(self, calls: int) -> None:
        return None

    async def call(self, api: str, **params: Any) -> Any:
        raise AssertionError("no calls expected")


def context(text: str, state: dict[str, Any], api: EditlessAPI, run_id: int) -> HandlerContext:
    async def load() -> dict[str, Any]:
        return state

    async def save(value: dict[str, Any]) -> None:
        return None

    event = MessageReceived(
        bot_id="b",
        adapter="web",
        chat_type="private",
        chat_id="c1",
        message_id=f"m{run_id}",
        message_chain=MessageChain.of(text),
        sender=User(id="u1"),
    )
    return HandlerContext(
        bot_id="b",
        session=SessionKey("b", "private", "c1"),
        events=[event],
        run_id=run_id,
        api=api,
        clock=LoopClock(),
        load_state=load,
        save_state=save,
        stats=dict,
    )


def agent(base_url: str, **extra: Any) -> AgentHandler:
    settings = {"runner": "openai", "runner_config": {"base_url": base_url, "api_key": API_KEY, "model": "m"}}
    return AgentHandler(AgentConfig.model_validate({**settings, **extra}))


async def test_dropped_turns_are_summarised_into_the_prompt(model: FakeOpenAI) -> None:
    handler = agent(model.base_url, stream=False, memory={"max_turns": 1, "summarize": True})
    api, state = EditlessAPI(), {}
    try:
        await handler.handle(context("my cat is Tom", state, api, 1))
        model.script(Reply(text="second answer"), Reply(text="The user's cat is called Tom."))
        await handler.handle(context("and my dog?", state, api, 2))
        await handler.handle(context("what pets?", state, api, 3))
    finally:
        await handler.close()
    summary_request = model.requests[2]
    assert "my cat is Tom" in summary_request["messages"][1]["content"]
    system = model.requests[3]["messages"][0]["content"]
    assert system.endswith("Summary of the earlier conversation: The user's cat is called Tom.")
    folded = model.requests[4]["messages"][1]["content"]  # the next summary builds on the last one
    assert folded.startswith("Summary so far: The user's cat is called Tom.") and "and my dog?" in folded
    assert state["agent"]["summary"].startswith("echo: Summary so far")


async def test_without_edits_the_answer_arrives_once_and_split_to_the_limit(model: FakeOpenAI) -> None:
    model.script(Reply(text="one two three four five", chunk_size=2))
    handler = agent(model.base_url, stream=True)
    api = EditlessAPI()
    try:
        await handler.handle(context("count", {}, api, 1))
    finally:
        await handler.close()
    assert model.requests[0]["stream"] is True
    assert api.sent == ["one two", "three four", "five"]  # no partial messages, cut at the limit
