"""The keyword auto-reply example, end to end: web chat -> engine -> runner process -> reply."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugins.support import EXAMPLES, fleet_plugins, plugin_fleet
from tests.support import chat_client, running_fleet

pytestmark = pytest.mark.timeout(60)

RULES = """
- event_type: message.received
  handler_type: plugin
  priority: 10
  handler_config: {plugin_filter: [keyword-reply]}
- event_type: message.received
  handler_type: pipeline
  handler_config: {stages: [{type: echo, prefix: "echo: "}]}
"""


async def test_keyword_reply_answers_and_prevents_the_fallback(tmp_path: Path) -> None:
    plugins = f"""
      - path: {EXAMPLES / "keyword_reply"}
        config: {{keywords: {{hello: "Hi there!", price: "It is free."}}, count: true}}
    """
    config = plugin_fleet(tmp_path, plugins, RULES)
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("well hello you")
        first = await client.wait_for(lambda f: f["op"] == "message")
        assert first["text"] == "Hi there! (answer 1 in this chat)"
        await client.say("nothing to see")  # no keyword: the fallback (echo) answers
        echoed = await client.wait_for(lambda f: f["op"] == "message" and f["text"].startswith("echo"))
        assert echoed["text"] == "echo: nothing to see"
        await client.say("what is the price?")
        third = await client.wait_for(lambda f: f["op"] == "message" and "free" in f["text"])
        assert third["text"] == "It is free. (answer 2 in this chat)"  # state kept per session
        await client.say("/keywords")
        listing = await client.wait_for(lambda f: f["op"] == "message" and f["text"].startswith("keywords"))
        assert listing["text"] == "keywords: hello, price"
        assert len(client.of("message")) == 4  # one answer per message, never both plugin and fallback
        info = fleet.system  # the runner really is another process
        entry = next(iter(fleet_plugins(fleet)))
        assert entry["status"] == "ready" and entry["pid"] not in (None, __import__("os").getpid())
        assert entry["counters"]["events"] == 4
        assert info is not None
