"""The long connection end to end: lark-oapi's real ws client against the fake
platform's frame protocol, each event answered only after the journal has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.engine.events import MessageReceived
from callboard.testing.fake_lark import FakeLark
from tests.lark.conftest import ANN, BOT, lark_fleet, running, stored_events
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)


async def test_a_message_is_stored_answered_and_echoed(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    async with running(lark_fleet(tmp_path, lark)) as fleet:
        await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0], timeout=20)
        event_id = lark.push(lark.message_event(chat, ANN, "hello"))
        await lark.wait_calls("send_message", 1)
        await lark.wait_acked()
        assert lark.texts_sent() == ["hello"]
        assert lark.acked(event_id) == 1
        events = await stored_events(fleet)
        assert len(events) == 1 and isinstance(events[0], MessageReceived)
        assert events[0].chat_type == "private" and events[0].chat_id == chat
        assert events[0].sender.id == ANN
