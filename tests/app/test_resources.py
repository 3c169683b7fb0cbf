"""A program embedding callboard hands live objects to its adapters (`start(resources=...)`):
here an in-process adapter reads a queue it was handed and writes replies to a list."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

from callboard.actors.config_file import parse_fleet
from callboard.adapters.base import Adapter, AdapterConfig
from callboard.app import start
from callboard.engine.actor import Actor
from callboard.engine.entities import ChatType, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.platform import MessageResult
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


class QueueConfig(AdapterConfig):
    type: Literal["queue"] = "queue"
    inbox: str
    outbox: str


class QueueConnection(Actor):
    def __init__(self, adapter: QueueAdapter) -> None:
        self.adapter = adapter
        self.task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self.task = asyncio.ensure_future(self.adapter.pump())
        self.adapter.host.set_connected(True, "reading the queue")

    async def on_stop(self) -> None:
        if self.task is not None:
            self.task.cancel()


class QueueAdapter(Adapter):
    config_type = QueueConfig

    def connection(self) -> tuple[type[Actor], tuple[Any, ...]]:
        return QueueConnection, (self,)

    async def pump(self) -> None:
        assert isinstance(self.config, QueueConfig)
        inbox = self.host.resource(self.config.inbox)
        assert isinstance(inbox, asyncio.Queue)
        while True:
            text = await inbox.get()
            await self.host.ingest(
                [
                    MessageReceived(
                        bot_id=self.host.bot_id,
                        adapter="queue",
                        dedup_key=text,
                        message_id=text,
                        chat_type=ChatType.PRIVATE,
                        chat_id="c1",
                        sender=User(id="u1", nickname="u1"),
                        message_chain=MessageChain.of(text),
                    )
                ]
            )

    async def send_message(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        thread_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        assert isinstance(self.config, QueueConfig)
        outbox = self.host.resource(self.config.outbox)
        assert isinstance(outbox, list)
        outbox.append(message.text)
        return MessageResult(message_id=str(len(outbox)))


@pytest.fixture
def registered(tmp_path: Path) -> Iterator[None]:
    info = tmp_path / "site" / "queue_adapter-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: queue_adapter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[callboard.adapters]\nqueue = {__name__}:QueueAdapter\n")
    sys.path.insert(0, str(tmp_path / "site"))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path / "site"))


FLEET = """
name: embedded
engine: {{journal: {journal}, admin: {{host: 127.0.0.1, port: 0}}}}
bots:
  - id: q
    adapter: {{type: queue, inbox: feed, outbox: {outbox}}}
    session: {{debounce: {{window: 0}}}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


async def test_adapter_uses_live_objects(tmp_path: Path, registered: None) -> None:
    feed: asyncio.Queue[str] = asyncio.Queue()
    replies: list[str] = []
    config = parse_fleet(FLEET.format(journal=tmp_path / "j.sqlite3", outbox="replies"))
    running = await start(config, resources={"feed": feed, "replies": replies})
    try:
        await feed.put("hello")
        await eventually(lambda: replies == ["hello"])
    finally:
        await running.stop()


def test_a_missing_resource_names_what_exists(tmp_path: Path, registered: None) -> None:
    async def scenario() -> None:
        config = parse_fleet(FLEET.format(journal=tmp_path / "j.sqlite3", outbox="nowhere"))
        running = await start(config, resources={"feed": asyncio.Queue(), "replies": []})
        try:
            with pytest.raises(KeyError, match=r"no resource 'nowhere' .*given: feed, replies"):
                running.system.resource("nowhere")
        finally:
            await running.stop()

    asyncio.run(scenario())
