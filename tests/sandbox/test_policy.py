"""Policy checks, scope keys and the tools client's refusals (no containers)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from callboard.actors.sandbox import SessionTools, sandbox_factory, tools_for
from callboard.engine import Actor, ActorSystem
from callboard.engine.sandbox_api import (
    ExecArgs,
    NoSandbox,
    ReadArgs,
    SandboxOff,
    SandboxPolicyError,
    WriteArgs,
)
from callboard.sandbox.config import SandboxPolicy
from callboard.sandbox.policy import ScopeError, allowed_tools, denial, scope_key, session_name

pytestmark = pytest.mark.timeout(60)


class Recorder(Actor):
    """Stands in for the manager: any message reaching it is a failed refusal."""

    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    async def receive(self, message: Any) -> Any:
        self.seen.append(message)
        raise AssertionError("a refused call reached the manager")


def test_tool_allow_list_and_exec_handlers() -> None:
    policy = SandboxPolicy(enabled=True, tools=["read", "exec"], exec_handlers=["agent"])
    assert allowed_tools(policy, "agent") == {"read", "exec"}
    assert allowed_tools(policy, "pipeline") == {"read"}
    assert allowed_tools(policy, None) == {"read"}
    assert denial(policy, "exec", "b", "agent") is None
    assert "handler 'pipeline'" in (denial(policy, "exec", "b", "pipeline") or "")
    assert "not in bot 'b'" in (denial(policy, "write", "b", "agent") or "")
    closed = SandboxPolicy(enabled=True, exec_allowed=False)
    assert "exec_allowed is false" in (denial(closed, "exec", "b", None) or "")
    assert "exec" not in allowed_tools(closed)
    assert allowed_tools(SandboxPolicy()) == frozenset()
    assert "disabled" in (denial(SandboxPolicy(), "read", "b", None) or "")


def test_scope_keys() -> None:
    session = SandboxPolicy(scope="session")
    user = SandboxPolicy(scope="user")
    bot = SandboxPolicy(scope="bot")
    assert scope_key(session, "b", "group", "7", "u1") == scope_key(session, "b", "group", "7", "u2")
    assert scope_key(session, "b", "group", "7", "u1") != scope_key(session, "b", "group", "8", "u1")
    assert scope_key(session, "b", "group", "7", "u1", thread="t") != scope_key(
        session, "b", "group", "7", "u1"
    )
    assert scope_key(user, "b", "group", "7", "u1") == scope_key(user, "b", "private", "9", "u1")
    assert scope_key(bot, "b", "group", "7", "u1") == scope_key(bot, "b", "private", "9", "u2")
    assert scope_key(bot, "b1", "g", "7", None) != scope_key(bot, "b2", "g", "7", None)
    with pytest.raises(ScopeError, match="no user id"):
        scope_key(user, "b", "group", "7", None)  # fails closed: never a shared "unknown" sandbox


def test_session_names_are_safe_and_distinct() -> None:
    names = {session_name(f"session:bot:group:{chat}", 1) for chat in ("a/b", "a b", "a:b", "../x", "é")}
    assert len(names) == 5
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name), name
    assert session_name("k", 1) != session_name("k", 2)


async def test_refused_calls_never_reach_the_manager() -> None:
    system = ActorSystem("policy")
    seen: list[Any] = []
    manager = system.spawn(Recorder, "sandbox", seen)
    readonly = tools_for(manager, SandboxPolicy(enabled=True, tools=["read"]), "bot", "private", "1", "u")
    assert isinstance(readonly, SessionTools)
    with pytest.raises(SandboxPolicyError, match="'exec' is not in bot 'bot'"):
        await readonly.exec(ExecArgs(argv=["true"]))
    with pytest.raises(SandboxPolicyError, match="'write'"):
        await readonly.write(WriteArgs(path="a", content="x"))
    agent_only = tools_for(
        manager,
        SandboxPolicy(enabled=True, exec_handlers=["agent"]),
        "bot",
        "private",
        "1",
        "u",
        handler="run",
    )
    with pytest.raises(SandboxPolicyError, match="handler 'run'"):
        await agent_only.exec(ExecArgs(argv=["true"]))
    assert seen == []
    await system.shutdown()


def test_no_sandbox_when_off_disabled_or_unscoped() -> None:
    enabled = SandboxPolicy(enabled=True, scope="user")
    off = tools_for(None, enabled, "bot", "private", "1", "u")
    assert isinstance(off, NoSandbox) and isinstance(off.error, SandboxOff)
    assert "no sandbox configuration" in str(off.error)
    fake_ref: Any = object()
    disabled = tools_for(fake_ref, SandboxPolicy(), "bot", "private", "1", "u")
    assert isinstance(disabled, NoSandbox) and "disabled for bot 'bot'" in str(disabled.error)
    unscoped = tools_for(fake_ref, enabled, "bot", "group", "1", None)
    assert isinstance(unscoped, NoSandbox) and isinstance(unscoped.error, SandboxPolicyError)
    factory = sandbox_factory(None, enabled, "bot")
    assert factory("private", "1", None, "u") is None


async def test_no_sandbox_raises_the_reason() -> None:
    tools = tools_for(None, SandboxPolicy(enabled=True), "bot", "private", "1", "u")
    with pytest.raises(SandboxOff):
        await tools.read(ReadArgs(path="a"))
