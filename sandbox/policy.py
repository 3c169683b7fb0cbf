"""Per-bot policy checks and sandbox scope keys.

The policy is checked on the caller's side before every call, so a refused
call never reaches an actor or the engine. Scope keys fail closed: a
``user``-scoped sandbox without a user id is refused, never shared under a
placeholder.
"""

from __future__ import annotations

import hashlib
import re
import string
from urllib.parse import quote

from callboard.engine.sandbox_api import ToolName
from callboard.sandbox.config import SandboxPolicy

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ScopeError(ValueError):
    """The event lacks what the policy's scope needs (a user id for ``user``)."""


def allowed_tools(policy: SandboxPolicy, handler: str | None = None) -> frozenset[ToolName]:
    """The tools ``handler`` may use under ``policy``."""
    if not policy.enabled:
        return frozenset()
    tools = set(policy.tools)
    if not exec_allowed(policy, handler):
        tools.discard("exec")
    return frozenset(tools)


def exec_allowed(policy: SandboxPolicy, handler: str | None) -> bool:
    if not policy.exec_allowed or "exec" not in policy.tools:
        return False
    return policy.exec_handlers is None or (handler is not None and handler in policy.exec_handlers)


def denial(policy: SandboxPolicy, tool: str, bot_id: str, handler: str | None) -> str | None:
    """Why ``tool`` is refused, or None when it is allowed."""
    if not policy.enabled:
        return f"sandboxes are disabled for bot {bot_id!r}"
    if tool not in policy.tools:
        listed = ", ".join(policy.tools) or "empty"
        return f"tool {tool!r} is not in bot {bot_id!r}'s sandbox tool list ({listed})"
    if tool == "exec" and not policy.exec_allowed:
        return f"bot {bot_id!r} may not run commands (sandbox.exec_allowed is false)"
    if tool == "exec" and not exec_allowed(policy, handler):
        return f"handler {handler!r} of bot {bot_id!r} may not run commands (not in sandbox.exec_handlers)"
    return None


def scope_key(
    policy: SandboxPolicy,
    bot_id: str,
    chat_type: str,
    chat_id: str,
    user_id: str | None,
    thread: str | None = None,
    run: str | None = None,
) -> str:
    """The key that picks the sandbox: bot plus chat session, user, group member, run,
    template, or nothing. A field the scope needs and the event lacks is a ``ScopeError``."""
    if not bot_id:
        raise ScopeError("a sandbox scope needs a bot id")
    scope = policy.scope
    if scope == "bot":
        return f"bot:{bot_id}"
    if scope == "user":
        if not user_id:
            raise ScopeError(f"bot {bot_id!r} scopes sandboxes per user, but this event has no user id")
        return f"user:{bot_id}:{user_id}"
    if scope == "template":
        assert policy.scope_template is not None  # the config validator saw to it
        fields = {
            "bot_id": bot_id,
            "chat_type": chat_type,
            "chat_id": chat_id,
            "user_id": user_id,
            "run": run,
        }
        values = {name: quote(value or "", safe="") for name, value in fields.items()}
        for _, name, _, _ in string.Formatter().parse(policy.scope_template):
            if name is not None and name != "thread" and not values.get(name):
                raise ScopeError(f"bot {bot_id!r}'s scope_template needs {{{name}}}, which this event lacks")
        values["thread"] = quote(thread or "", safe="")
        return f"tpl:{bot_id}:{policy.scope_template.format(**values)}"
    if not chat_type or not chat_id:
        raise ScopeError(f"a {scope}-scoped sandbox needs a chat type and chat id")
    key = f"session:{bot_id}:{chat_type}:{chat_id}"
    key = f"{key}:{thread}" if thread else key
    if scope == "group_user" and chat_type == "group":
        if not user_id:
            raise ScopeError(
                f"bot {bot_id!r} scopes sandboxes per group member, but this event has no user id"
            )
        return f"member:{key}:{user_id}"
    if scope == "run":
        if not run:
            raise ScopeError(f"bot {bot_id!r} scopes sandboxes per run, but no run id was given")
        return f"run:{key}:{run}"
    return key


def session_name(key: str, generation: int) -> str:
    """A name safe for actors, container names and labels: readable prefix, hash, generation."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    readable = _UNSAFE.sub("-", key.split(":", 1)[-1]).strip("-.")[:24] or "s"
    return f"{readable}-{digest}-{generation}"
