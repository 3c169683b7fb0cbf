"""Tools an agent may call: the sandbox tools (through the ``SandboxTools``
contract and the bot's sandbox policy) and platform calls on the run's own
chat (through ``HandlerContext.api``, so the outbound path's limits, retries
and receipts apply). Only what the rule lists, the policy allows and the
adapter supports is offered. Specs are derived from the argument models, so
they cannot drift from what the call accepts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from callboard.engine.entities import MessageChain
from callboard.engine.sandbox_api import (
    EditArgs,
    ExecArgs,
    GlobArgs,
    GrepArgs,
    ReadArgs,
    SandboxError,
    WriteArgs,
)
from callboard.handlers.agent.config import ToolsConfig
from callboard.handlers.context import HandlerContext

SANDBOX_ARGS: dict[str, type[BaseModel]] = {
    "exec": ExecArgs,
    "read": ReadArgs,
    "write": WriteArgs,
    "edit": EditArgs,
    "glob": GlobArgs,
    "grep": GrepArgs,
}
SANDBOX_HIDDEN = {"exec": {"env", "stdin", "output_limit"}}

#: platform tools: description and JSON-schema properties (all act on the run's chat)
PLATFORM_TOOLS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "send_message": ("send a separate message to this chat", {"text": {"type": "string"}}, ["text"]),
    "add_reaction": (
        "react to a message of this chat",
        {"message_id": {"type": "string"}, "reaction": {"type": "string"}},
        ["message_id", "reaction"],
    ),
    "edit_message": (
        "replace the text of one of your messages in this chat",
        {"message_id": {"type": "string"}, "text": {"type": "string"}},
        ["message_id", "text"],
    ),
    "delete_message": ("delete a message of this chat", {"message_id": {"type": "string"}}, ["message_id"]),
    "kick_member": ("remove a member from this group", {"user_id": {"type": "string"}}, ["user_id"]),
    "mute_member": (
        "mute a member of this group (duration in seconds, 0: until unmuted)",
        {"user_id": {"type": "string"}, "duration": {"type": "integer", "minimum": 0}},
        ["user_id"],
    ),
    "unmute_member": ("unmute a member of this group", {"user_id": {"type": "string"}}, ["user_id"]),
    "get_group_member_list": ("list this group's members", {}, []),
    "get_user_info": ("look up a user", {"user_id": {"type": "string"}}, ["user_id"]),
    "call_platform_api": (
        "a platform-specific action",
        {"action": {"type": "string"}, "params": {"type": "object"}},
        ["action"],
    ),
}
GROUP_TOOLS = {"kick_member", "mute_member", "unmute_member", "get_group_member_list"}

#: where the sandbox mounts skills (relative to the workspace)
SKILLS = ".skills"
SKILLS_DESCRIPTION = "list the skills (folders of instructions and scripts) in your sandbox"
SKILLS_HOW = (
    "read <folder>/SKILL.md for instructions; run its scripts with exec (cwd <folder>, or a path "
    "in it): their Python packages are installed on first use"
)

ToolFn = Callable[[dict[str, Any]], Awaitable[Any]]


class Toolbox:
    """The tools of one run: their specs for the model and how to run each."""

    def __init__(self, ctx: HandlerContext, config: ToolsConfig) -> None:
        self.ctx = ctx
        self.limit = config.result_limit
        self.calls: dict[str, ToolFn] = {}
        self.specs: list[dict[str, Any]] = []
        sandbox = ctx.sandbox
        allowed = sandbox.tools if sandbox is not None else frozenset()
        for name in config.sandbox:
            if name in allowed:
                self._add_sandbox(name)
        if config.skills and {"glob", "read"} <= allowed:
            self.specs.append(_spec("list_skills", SKILLS_DESCRIPTION, {"type": "object", "properties": {}}))
            self.calls["list_skills"] = self._skills
        in_group = ctx.session.chat_type == "group"
        for platform_tool in config.platform:
            if (platform_tool not in GROUP_TOOLS or in_group) and ctx.api.supports(platform_tool):
                self._add_platform(platform_tool)

    def _add_sandbox(self, name: str) -> None:
        model = SANDBOX_ARGS[name]
        schema = model.model_json_schema()
        hidden = SANDBOX_HIDDEN.get(name, set())
        properties = {k: v for k, v in schema.get("properties", {}).items() if k not in hidden}
        for prop in properties.values():
            prop.pop("title", None)
        parameters: dict[str, Any] = {"type": "object", "properties": properties}
        if schema.get("required"):
            parameters["required"] = schema["required"]
        self.specs.append(_spec(name, (model.__doc__ or name).strip().splitlines()[0], parameters))

        async def run(arguments: dict[str, Any]) -> Any:
            assert self.ctx.sandbox is not None
            args = model.model_validate({k: v for k, v in arguments.items() if k not in hidden})
            result: BaseModel = await getattr(self.ctx.sandbox, name)(args)
            return result.model_dump(mode="json")

        self.calls[name] = run

    async def _skills(self, arguments: dict[str, Any]) -> Any:
        """Each skill's name, folder and the first line of its SKILL.md (read in the sandbox)."""
        sandbox = self.ctx.sandbox
        assert sandbox is not None
        found = await sandbox.glob(GlobArgs(pattern=f"{SKILLS}/*/SKILL.md", limit=200))
        skills = []
        for path in found.paths:
            name = path.split("/")[1]
            text = (await sandbox.read(ReadArgs(path=path, limit=30))).content
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            prose = [line for line in lines if not line.startswith("#")]
            description = (prose or [line.lstrip("# ") for line in lines] or [""])[0][:300]
            skills.append({"name": name, "folder": f"{SKILLS}/{name}", "description": description})
        return {"skills": skills, "how": SKILLS_HOW}

    def add_tool(self, name: str, description: str, parameters: dict[str, Any], call: ToolFn) -> None:
        """Offer one more tool (an MCP server's): its result is limited like the others'."""
        self.specs.append(_spec(name, description, parameters))
        self.calls[name] = call

    def _add_platform(self, name: str) -> None:
        description, properties, required = PLATFORM_TOOLS[name]
        self.specs.append(
            _spec(name, description, {"type": "object", "properties": properties, "required": required})
        )
        self.calls[name] = lambda arguments: self._platform(name, arguments)

    async def _platform(self, name: str, arguments: dict[str, Any]) -> Any:
        ctx = self.ctx
        chat = {"chat_type": ctx.session.chat_type, "chat_id": ctx.session.chat_id}
        group = ctx.session.chat_id
        if name == "send_message":
            result = await ctx.reply(str(arguments["text"]))
            return {"message_id": result.message_id}
        if name == "add_reaction":
            await ctx.api.call(
                name, **chat, message_id=str(arguments["message_id"]), reaction=str(arguments["reaction"])
            )
        elif name == "edit_message":
            await ctx.api.call(
                name,
                **chat,
                message_id=str(arguments["message_id"]),
                new_content=MessageChain.of(str(arguments["text"])),
            )
        elif name == "delete_message":
            await ctx.api.call(name, **chat, message_id=str(arguments["message_id"]))
        elif name == "mute_member":
            duration = int(arguments.get("duration") or 0)
            await ctx.api.call(name, group_id=group, user_id=str(arguments["user_id"]), duration=duration)
        elif name in ("kick_member", "unmute_member"):
            await ctx.api.call(name, group_id=group, user_id=str(arguments["user_id"]))
        elif name == "get_group_member_list":
            members = await ctx.api.call(name, group_id=group)
            return [{"user_id": m.user.id, "name": m.user.nickname, "role": str(m.role)} for m in members]
        elif name == "get_user_info":
            user = await ctx.api.call(name, user_id=str(arguments["user_id"]))
            return {"user_id": user.id, "name": user.nickname, "username": user.username}
        elif name == "call_platform_api":
            params = arguments.get("params") or {}
            return await ctx.api.call(name, action=str(arguments["action"]), params=dict(params))
        return {"ok": True}

    async def run(self, name: str, arguments: str) -> str:
        """Run one call; whatever happens, the model gets a short text back."""
        call = self.calls.get(name)
        if call is None:
            return _error(f"no tool named {name!r}; available: {', '.join(self.calls) or 'none'}")
        try:
            parsed = orjson.loads(arguments or "{}")
            if not isinstance(parsed, dict):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError):
            return _error("arguments must be a JSON object")
        try:
            value = await call(parsed)
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            return _error(f"{where}: {first['msg']}")
        except SandboxError as exc:
            return _error(f"{exc.code}: {exc}")
        except (KeyError, ValueError, LookupError) as exc:
            return _error(f"bad arguments: {exc}")
        except Exception as exc:  # a tool's failure is the model's to handle, not the run's
            self.ctx.log.warning("tool %s failed: %r", name, exc)
            return _error(f"{type(exc).__name__}: {str(exc)[:300]}")
        text = orjson.dumps(value).decode()
        if len(text) > self.limit:
            text = text[: self.limit] + f"... [truncated {len(text) - self.limit} characters]"
        return text


def _spec(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def _error(message: str) -> str:
    return orjson.dumps({"error": message}).decode()
