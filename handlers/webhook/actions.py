"""Response actions: what a webhook receiver may ask the bot to do.

The receiver answers ``{"actions": [{"type": ..., "params": {...}}, ...]}``.
Actions run in order through ``HandlerContext`` (the outbound path: rate
limits, retries, receipts). A malformed or unknown action, or one that fails,
becomes an error on the run and the remaining actions still run. Chat
parameters default to the run's own chat; group ones to its group.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from callboard.engine.entities import At, MessageChain, Plain
from callboard.handlers.context import HandlerContext

MAX_ACTIONS = 50


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Content(_Params):
    text: str | None = Field(default=None, max_length=32_000)
    message: list[dict[str, Any]] | None = Field(
        default=None,
        description='components: {"type": "Plain", "text": ...} or {"type": "At", "target": ...}',
    )

    @model_validator(mode="after")
    def _one_content(self) -> _Content:
        if (self.text is None) == (self.message is None):
            raise ValueError("give exactly one of text or message")
        return self

    def chain(self) -> MessageChain:
        if self.text is not None:
            return MessageChain.of(self.text)
        parts: list[Any] = []
        for component in self.message or ():
            kind = component.get("type")
            if kind == "Plain" and isinstance(component.get("text"), str):
                parts.append(Plain(text=component["text"]))
            elif kind == "At" and component.get("target") is not None:
                parts.append(At(target=str(component["target"])))
            else:
                raise ValueError(f"message component {kind!r} is not supported here (Plain, At)")
        return MessageChain.of(*parts)


class _InChat(_Params):
    chat_type: Literal["private", "group"] | None = None
    chat_id: str | None = None


class ReplyParams(_Content):
    quote: bool = False


class SendParams(_Content):
    target_type: Literal["private", "group"]
    target_id: str = Field(min_length=1)


class EditParams(_InChat):
    message_id: str = Field(min_length=1)
    text: str = Field(max_length=32_000)


class DeleteParams(_InChat):
    message_id: str = Field(min_length=1)


class ReactionParams(_InChat):
    message_id: str = Field(min_length=1)
    reaction: str = Field(min_length=1, max_length=64)


class PlatformParams(_Params):
    action: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class FriendParams(_Params):
    request_id: str = Field(min_length=1)
    approve: bool = True
    remark: str | None = None


class InviteParams(_Params):
    request_id: str = Field(min_length=1)
    approve: bool = True


class MemberParams(_Params):
    group_id: str | None = None
    user_id: str = Field(min_length=1)


class MuteParams(MemberParams):
    duration: int = Field(default=0, ge=0)


ACTION_PARAMS: dict[str, type[BaseModel]] = {
    "reply": ReplyParams,
    "send_message": SendParams,
    "edit_message": EditParams,
    "delete_message": DeleteParams,
    "add_reaction": ReactionParams,
    "call_platform_api": PlatformParams,
    "approve_friend_request": FriendParams,
    "approve_group_invite": InviteParams,
    "kick_member": MemberParams,
    "mute_member": MuteParams,
}


def parse_action(raw: Any) -> tuple[str, Any]:
    """(type, params model); raises ValueError with a readable reason."""
    if not isinstance(raw, dict):
        raise ValueError("an action must be a JSON object")
    kind = raw.get("type")
    if kind not in ACTION_PARAMS:
        raise ValueError(f"unknown action type {kind!r}; known: {', '.join(ACTION_PARAMS)}")
    extra = set(raw) - {"type", "params"}
    if extra:
        raise ValueError(f"{kind}: unknown keys {sorted(extra)}; put arguments under params")
    try:
        params = ACTION_PARAMS[kind].model_validate(raw.get("params") or {})
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "params"
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(
            f"{kind}: params.{where}: {message}" if first["loc"] else f"{kind}: {message}"
        ) from None
    return str(kind), params


async def run_actions(ctx: HandlerContext, actions: Any) -> list[str]:
    """Run each action in order; return the errors (the others still ran)."""
    if not isinstance(actions, list):
        return ["actions must be a list"]
    errors: list[str] = []
    for index, raw in enumerate(actions[:MAX_ACTIONS]):
        try:
            kind, params = parse_action(raw)
            await _run(ctx, kind, params)
        except Exception as exc:  # one bad action never stops the rest
            errors.append(f"action {index}: {str(exc)[:300] or type(exc).__name__}")
    if len(actions) > MAX_ACTIONS:
        errors.append(f"only the first {MAX_ACTIONS} actions ran")
    return errors


async def _run(ctx: HandlerContext, kind: str, params: Any) -> None:
    session = ctx.session
    api = ctx.api
    if kind == "reply":
        await ctx.reply(params.chain(), quote=params.quote)
    elif kind == "send_message":
        await ctx.send(params.target_type, params.target_id, params.chain())
    elif kind in ("edit_message", "delete_message", "add_reaction"):
        chat = {
            "chat_type": params.chat_type or session.chat_type,
            "chat_id": params.chat_id or session.chat_id,
        }
        if kind == "edit_message":
            await api.call(
                kind, **chat, message_id=params.message_id, new_content=MessageChain.of(params.text)
            )
        elif kind == "delete_message":
            await api.call(kind, **chat, message_id=params.message_id)
        else:
            await api.call(kind, **chat, message_id=params.message_id, reaction=params.reaction)
    elif kind == "call_platform_api":
        await api.call(kind, action=params.action, params=params.params)
    elif kind == "approve_friend_request":
        await api.call(kind, request_id=params.request_id, approve=params.approve, remark=params.remark)
    elif kind == "approve_group_invite":
        await api.call(kind, request_id=params.request_id, approve=params.approve)
    else:
        group = params.group_id or (session.chat_id if session.chat_type == "group" else None)
        if group is None:
            raise ValueError(f"{kind} needs a group_id outside a group chat")
        if kind == "mute_member":
            await api.call(kind, group_id=group, user_id=params.user_id, duration=params.duration)
        else:
            await api.call(kind, group_id=group, user_id=params.user_id)
