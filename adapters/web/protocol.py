"""The web chat protocol: JSON text frames over ``/web/{bot_id}/ws``, as msgspec Structs.

Client to server: ``send``, ``edit``, ``delete``, ``react``, ``join``, ``leave``
(each with a ``client_msg_id``, answered by ``ack``, ``duplicate`` or ``error``
once the event is durable) and ``subscribe`` (with ``since``, to receive every
stored bot frame after that sequence number). Who sends is never in a frame: it
is the connection's session (see ``identity``).
Server to client: ``hello`` (the session's identity, first), ``ack``,
``duplicate``, ``error``, ``subscribed``, and bot output as ``message``,
``edited``, ``deleted``, ``reaction``, ``typing``, each with a per-chat ``seq``.
See docs/web-protocol.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

Text = Annotated[str, msgspec.Meta(max_length=32_000)]
Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=160)]
Name = Annotated[str, msgspec.Meta(max_length=128)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
ChatKind = Literal["private", "group"]


class _Op(msgspec.Struct, tag_field="op", kw_only=True, gc=False):
    """A client frame; unknown fields are ignored."""


class _ChatOp(_Op, kw_only=True):
    chat_id: Ident
    chat_type: ChatKind = "private"
    client_msg_id: Ident
    #: only for old clients: accepted when it is the session's own id, refused otherwise
    user_id: str | None = None
    #: a display name (anonymous sessions only; signed-in users keep their own)
    user_name: Name = ""


class SendOp(_ChatOp, tag="send", kw_only=True):
    text: Text
    reply_to: Ident | None = None


class EditOp(_ChatOp, tag="edit", kw_only=True):
    message_id: Ident
    text: Text


class DeleteOp(_ChatOp, tag="delete", kw_only=True):
    message_id: Ident


class ReactOp(_ChatOp, tag="react", kw_only=True):
    message_id: Ident
    reaction: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    remove: bool = False


class JoinOp(_ChatOp, tag="join", kw_only=True):
    chat_type: ChatKind = "group"
    group_name: Name = ""


class LeaveOp(_ChatOp, tag="leave", kw_only=True):
    chat_type: ChatKind = "group"


class SubscribeOp(_Op, tag="subscribe", kw_only=True):
    chat_id: Ident
    since: Seq = 0


EventOp = SendOp | EditOp | DeleteOp | ReactOp | JoinOp | LeaveOp
ClientOp = EventOp | SubscribeOp
OPS = ("send", "edit", "delete", "react", "join", "leave", "subscribe")

_decoder = msgspec.json.Decoder(ClientOp)
_loose = msgspec.json.Decoder()


# ---------------------------------------------------------------------- server frames


class _Frame(msgspec.Struct, tag_field="op", kw_only=True, gc=False):
    """A server frame."""


class Hello(_Frame, tag="hello", kw_only=True):
    user_id: str
    user_name: str
    #: set when the server just issued a session: present it again (cookie or bearer) to stay this user
    token: str | None = None


class Ack(_Frame, tag="ack", kw_only=True):
    client_msg_id: str
    message_id: str | None
    event_id: str


class Duplicate(_Frame, tag="duplicate", kw_only=True):
    client_msg_id: str


class Error(_Frame, tag="error", kw_only=True, omit_defaults=True):
    client_msg_id: str | None = None
    code: str
    reason: str
    #: for ``busy``: when trying again is likely to succeed
    retry_after_ms: int | None = None


class Subscribed(_Frame, tag="subscribed", kw_only=True):
    chat_id: str
    seq: int


class Typing(_Frame, tag="typing", kw_only=True):
    chat_id: str


_encoder = msgspec.json.Encoder()


def encode(frame: _Frame | dict[str, Any]) -> bytes:
    """One frame as JSON bytes (stored bot output is a dict: it comes from the outbox)."""
    return _encoder.encode(frame)


def error(client_msg_id: str | None, code: str, reason: str, retry_after: float | None = None) -> bytes:
    retry_ms = None if retry_after is None else max(1, round(retry_after * 1000))
    return encode(Error(client_msg_id=client_msg_id, code=code, reason=reason, retry_after_ms=retry_ms))


class FrameError(Exception):
    """A frame we cannot take: ``code`` and ``reason`` go back to the client."""

    def __init__(
        self, code: str, reason: str, client_msg_id: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.client_msg_id = client_msg_id
        self.retry_after = retry_after

    def frame(self) -> bytes:
        return error(self.client_msg_id, self.code, self.reason, self.retry_after)


def parse_op(data: str | bytes) -> ClientOp:
    """Validate one client frame; raises ``FrameError`` with a readable reason."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _explain(data, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise FrameError("bad_json", f"frame is not valid JSON: {exc}") from None


def _explain(data: str | bytes, message: str) -> FrameError:
    """The error path only: look at the frame loosely to say what is wrong."""
    try:
        raw = _loose.decode(data)
    except msgspec.DecodeError as exc:  # the typed decoder stopped before the JSON went bad
        return FrameError("bad_json", f"frame is not valid JSON: {exc}")
    if not isinstance(raw, dict):
        return FrameError("bad_frame", "a frame must be a JSON object")
    client_msg_id = raw.get("client_msg_id") if isinstance(raw.get("client_msg_id"), str) else None
    op = raw.get("op")
    if op not in OPS:
        return FrameError("unknown_op", f"unknown op {op!r}; expected one of {', '.join(OPS)}", client_msg_id)
    return FrameError("bad_frame", message.replace("`", ""), client_msg_id)
