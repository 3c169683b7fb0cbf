"""The web chat protocol: JSON text frames over ``/web/{bot_id}/ws``.

Client to server: ``send``, ``edit``, ``delete``, ``react``, ``join``,
``leave`` (each with a ``client_msg_id``, answered by ``ack``, ``duplicate``
or ``error`` once the event is durable) and ``subscribe`` (with ``since``, to
receive every stored bot frame after that sequence number).
Server to client: ``ack``, ``duplicate``, ``error``, ``subscribed``, and bot
output as ``message``, ``edited``, ``deleted``, ``reaction``, ``typing``,
each with a per-chat ``seq``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

Text = Annotated[str, Field(max_length=32_000)]
Ident = Annotated[str, Field(min_length=1, max_length=128)]


class _Op(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _ChatOp(_Op):
    chat_id: Ident
    chat_type: Literal["private", "group"] = "private"
    user_id: Ident
    user_name: Annotated[str, Field(max_length=128)] = ""
    client_msg_id: Ident


class SendOp(_ChatOp):
    op: Literal["send"]
    text: Text
    reply_to: Ident | None = None


class EditOp(_ChatOp):
    op: Literal["edit"]
    message_id: Ident
    text: Text


class DeleteOp(_ChatOp):
    op: Literal["delete"]
    message_id: Ident


class ReactOp(_ChatOp):
    op: Literal["react"]
    message_id: Ident
    reaction: Annotated[str, Field(min_length=1, max_length=64)]
    remove: bool = False


class JoinOp(_ChatOp):
    op: Literal["join"]
    chat_type: Literal["group"] = "group"
    group_name: Annotated[str, Field(max_length=128)] = ""


class LeaveOp(_ChatOp):
    op: Literal["leave"]
    chat_type: Literal["group"] = "group"


class SubscribeOp(_Op):
    op: Literal["subscribe"]
    chat_id: Ident
    since: int = Field(default=0, ge=0)


ClientOp = Annotated[
    SendOp | EditOp | DeleteOp | ReactOp | JoinOp | LeaveOp | SubscribeOp, Field(discriminator="op")
]
OPS = ("send", "edit", "delete", "react", "join", "leave", "subscribe")
_ops: TypeAdapter[Any] = TypeAdapter(ClientOp)


class FrameError(Exception):
    """A frame we cannot take: ``code`` and ``reason`` go back to the client."""

    def __init__(self, code: str, reason: str, client_msg_id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.client_msg_id = client_msg_id


def parse_op(data: str | bytes) -> Any:
    """Validate one client frame; raises ``FrameError`` with a readable reason."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FrameError("bad_json", f"frame is not valid JSON: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise FrameError("bad_frame", "a frame must be a JSON object")
    client_msg_id = raw.get("client_msg_id") if isinstance(raw.get("client_msg_id"), str) else None
    op = raw.get("op")
    if op not in OPS:
        raise FrameError("unknown_op", f"unknown op {op!r}; expected one of {', '.join(OPS)}", client_msg_id)
    try:
        return _ops.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"][1:]) or "frame"
        raise FrameError("bad_frame", f"{field}: {first['msg']}", client_msg_id) from None


def frame(**fields: Any) -> bytes:
    return orjson.dumps(fields)
