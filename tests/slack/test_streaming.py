"""An agent's streamed answer on Slack: one chat.postMessage, then chat.update
edits of that message, throttled by the agent's stream_interval; the bot's own
message_changed echoes never come back as events."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from callboard.engine.events import MessageEdited, MessageReceived
from callboard.testing.fake_openai import FakeOpenAI, Reply
from callboard.testing.fake_slack import FakeSlack
from tests.agent.conftest import agent_rule
from tests.slack.conftest import ANN, running, slack_fleet, stored_events

pytestmark = pytest.mark.timeout(60)


async def test_a_streamed_answer_edits_one_message(
    tmp_path: Path, slack: FakeSlack, model: FakeOpenAI
) -> None:
    answer = "The quick brown fox jumps over the lazy dog, then naps in the sun for a while."
    model.script(Reply(text=answer, chunk_size=3, chunk_delay=0.02))
    async with running(slack_fleet(tmp_path, slack, handlers=agent_rule(model.base_url))) as fleet:
        await slack.wait_socket()
        dm = slack.im(ANN)
        slack.push(slack.message(dm, ANN, "tell me something"))
        await slack.wait_calls("chat.update", 2, timeout=20)
        for _ in range(100):
            if slack.messages[dm][-1]["text"] == answer:
                break
            await slack.wait_calls("chat.update", len(slack.answered("chat.update")) + 1, timeout=5)
        posts = slack.answered("chat.postMessage")
        updates = slack.answered("chat.update")
        assert len(posts) == 1 and len(posts[0]["text"]) < len(answer)
        ts = slack.messages[dm][-1]["ts"]
        assert all(u["ts"] == ts and u["channel"] == dm for u in updates)
        assert updates[-1]["text"] == answer
        gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
        assert len(updates) < len(answer) / 3  # throttled, not one edit per chunk
        # stream_interval 50 ms between streamed edits (the final text lands at once)
        assert all(gap >= 0.03 for gap in gaps[:-1])
        await slack.wait_acked()
        events = await stored_events(fleet)
        assert [type(e) for e in events] == [MessageReceived]  # no echoes of our own edits
        assert not any(isinstance(e, MessageEdited) for e in events)
