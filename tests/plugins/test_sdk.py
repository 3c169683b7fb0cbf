"""The SDK in process: decorators, listener order, and callboard.plugin.testing
(the way docs/plugins.md tells authors to test a plugin)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from callboard.engine.plugin_protocol import RemoteError
from callboard.plugin import Context, Plugin, command, on
from callboard.plugin.runner import LoadError
from callboard.plugin.testing import PluginTester
from tests.plugins.support import EXAMPLES


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / name / "plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Ordered(Plugin):
    @on("message.*", priority=1)
    async def low(self, ctx: Context) -> None:
        await ctx.reply("low")

    @on("message.received", priority=5)
    async def high(self, ctx: Context) -> None:
        await ctx.reply("high")
        if ctx.text == "stop":
            ctx.prevent_postorder()

    @command("ping")
    async def ping(self, ctx: Context) -> None:
        await ctx.reply(f"pong {ctx.args}")


async def test_listeners_run_by_priority_and_postorder_can_be_prevented() -> None:
    tester = PluginTester(Ordered)
    await tester.start()
    assert (await tester.emit(tester.message("hi"))).replies == ["high", "low"]
    stopped = await tester.emit(tester.message("stop"))
    assert stopped.replies == ["high"] and stopped.postorder_prevented
    assert (await tester.emit(tester.message("/ping@bot 42"))).replies == ["high", "low", "pong 42"]
    assert Ordered.listeners()["ping"][0].command == "ping"


async def test_the_keyword_example_under_the_tester() -> None:
    module = example("keyword_reply")
    tester = PluginTester(
        module.KeywordReply,
        config={"keywords": {"hi": "Hello!"}, "count": True},
        capabilities=["send", "state"],
    )
    await tester.start()
    outcome = await tester.emit(tester.message("oh hi"))
    assert outcome.replies == ["Hello! (answer 1 in this chat)"] and outcome.default_prevented
    assert (await tester.emit(tester.message("hi again"))).replies == ["Hello! (answer 2 in this chat)"]
    assert (await tester.emit(tester.message("nothing"))).replies == []


async def test_the_tester_enforces_capabilities_and_config() -> None:
    module = example("moderator")
    with pytest.raises(LoadError):
        await PluginTester(module.Moderator, config={"banned": []}).start()
    tester = PluginTester(module.Moderator, config={"banned": ["spam"]}, capabilities=["send", "state"])
    await tester.start()
    with pytest.raises(RemoteError, match="delete_message"):  # not declared here: refused
        await tester.emit(tester.message("spam!", chat_type="group", chat_id="g1"))
    allowed = PluginTester(module.Moderator, config={"banned": ["spam"], "mute_after": 1})
    await allowed.start()
    outcome = await allowed.emit(allowed.message("spam!", chat_type="group", chat_id="g1", user_name="Max"))
    assert [name for name, _ in outcome.calls] == ["delete_message", "mute_member"]
    assert outcome.replies == ["Max is muted for 600s"]


async def test_welcome_under_the_tester() -> None:
    module = example("welcome")
    tester = PluginTester(module.Welcome, config={"template": "Hi {member}, welcome to {group} ({count})"})
    tester.api_results["get_group_info"] = {"id": "g1", "name": "Team", "member_count": 3}
    await tester.start()
    outcome = await tester.emit(tester.member_joined("g1", "u2", user_name="Ann", group_name="Team"))
    assert outcome.replies == ["Hi Ann, welcome to Team (3)"]
    assert outcome.sent[0].chat_id == "g1" and outcome.sent[0].chat_type == "group"


def test_decorators_refuse_bad_input(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        on()
    with pytest.raises(ValueError):
        command("/slash")
