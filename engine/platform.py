"""The unified platform API every adapter implements and every handler calls.

``PlatformAPI`` lists the common API of the event-based design. Each method
raises ``NotSupportedError`` naming the adapter and the API unless the adapter
overrides it; an adapter's ``Manifest`` is derived from what it overrides, so
the declaration can never drift from the code.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
from pydantic import BaseModel, Field

from callboard.engine.entities import ID, Group, GroupMember, MessageChain, User
from callboard.engine.events import MessageReceived

#: the common API, in the order the manifest lists it
COMMON_APIS: tuple[str, ...] = (
    "send_message",
    "reply_message",
    "edit_message",
    "delete_message",
    "forward_message",
    "get_message",
    "add_reaction",
    "get_group_info",
    "get_group_list",
    "get_group_member_list",
    "get_group_member_info",
    "set_group_name",
    "mute_member",
    "unmute_member",
    "kick_member",
    "leave_group",
    "get_user_info",
    "get_friend_list",
    "approve_friend_request",
    "approve_group_invite",
    "upload_file",
    "get_file_url",
)


class NotSupportedError(Exception):
    """The adapter does not implement this API or platform action."""

    def __init__(self, adapter: str, api: str) -> None:
        super().__init__(f"adapter {adapter!r} does not support {api!r}")
        self.adapter = adapter
        self.api = api


class SendError(Exception):
    """A send the platform refused. ``permanent`` errors are not retried."""

    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class MessageResult(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """What a send returned: built once per reply, so a Struct, like the events."""

    message_id: ID | None = None
    raw: dict[str, Any] | None = None


class PlatformAction(BaseModel):
    action: str
    description: str = ""
    params: dict[str, str] = Field(default_factory=dict, description="param name -> description")


class RateLimits(BaseModel):
    """Outbound limits the platform enforces; 0 means unlimited."""

    per_bot_per_second: float = 0
    per_private_chat_per_second: float = 0
    per_group_chat_per_minute: float = 0


class Manifest(BaseModel):
    """What an adapter supports: events it emits, common APIs, platform actions."""

    name: str
    events: list[str]
    apis: list[str]
    platform_actions: list[PlatformAction] = Field(default_factory=list)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    max_text_length: int | None = None


class PlatformAPI:
    """Base of every adapter's API. Override the methods the platform supports."""

    #: set by subclasses: the adapter's name, e.g. "telegram"
    adapter_name: ClassVar[str] = "unknown"
    #: event types the adapter emits
    emits: ClassVar[tuple[str, ...]] = ()
    platform_actions: ClassVar[tuple[PlatformAction, ...]] = ()
    #: the platform's defaults; an adapter instance may replace them from its config
    #: (the Outlet reads the instance's)
    rate_limits: RateLimits = RateLimits()
    max_text_length: ClassVar[int | None] = None
    #: True when a repeated ``idempotency_key`` never sends twice: such an
    #: adapter keeps its own record of sends, so no receipts are written for it
    idempotent_sends: ClassVar[bool] = False

    @classmethod
    def manifest(cls) -> Manifest:
        return Manifest(
            name=cls.adapter_name,
            events=list(cls.emits),
            apis=[api for api in COMMON_APIS if cls.supports(api)]
            + (["call_platform_api"] if cls.platform_actions else []),
            platform_actions=list(cls.platform_actions),
            rate_limits=cls.rate_limits,
            max_text_length=cls.max_text_length,
        )

    @classmethod
    def supports(cls, api: str) -> bool:
        if api == "call_platform_api":
            return bool(cls.platform_actions)
        method = getattr(cls, api, None)
        return method is not None and method is not getattr(PlatformAPI, api, None)

    def _unsupported(self, api: str) -> NotSupportedError:
        return NotSupportedError(self.adapter_name, api)

    # ------------------------------------------------------------------ messages

    # ``idempotency_key`` is the send's receipt key: unique per send and the same
    # when a replay repeats it. Platforms that dedupe sends by key use it.
    # ``thread_id`` is the topic inside the chat (Telegram forum topics), if any.

    async def send_message(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        thread_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        raise self._unsupported("send_message")

    async def reply_message(
        self,
        event: MessageReceived,
        message: MessageChain,
        quote_origin: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        raise self._unsupported("reply_message")

    async def edit_message(
        self, chat_type: str, chat_id: str, message_id: str, new_content: MessageChain
    ) -> None:
        raise self._unsupported("edit_message")

    async def delete_message(self, chat_type: str, chat_id: str, message_id: str) -> None:
        raise self._unsupported("delete_message")

    async def forward_message(
        self, from_chat_type: str, from_chat_id: str, message_id: str, to_chat_type: str, to_chat_id: str
    ) -> MessageResult:
        raise self._unsupported("forward_message")

    async def get_message(self, chat_type: str, chat_id: str, message_id: str) -> MessageReceived:
        raise self._unsupported("get_message")

    async def add_reaction(self, chat_type: str, chat_id: str, message_id: str, reaction: str) -> None:
        raise self._unsupported("add_reaction")

    # ------------------------------------------------------------------ groups

    async def get_group_info(self, group_id: str) -> Group:
        raise self._unsupported("get_group_info")

    async def get_group_list(self) -> list[Group]:
        raise self._unsupported("get_group_list")

    async def get_group_member_list(self, group_id: str) -> list[GroupMember]:
        raise self._unsupported("get_group_member_list")

    async def get_group_member_info(self, group_id: str, user_id: str) -> GroupMember:
        raise self._unsupported("get_group_member_info")

    async def set_group_name(self, group_id: str, name: str) -> None:
        raise self._unsupported("set_group_name")

    async def mute_member(self, group_id: str, user_id: str, duration: int = 0) -> None:
        raise self._unsupported("mute_member")

    async def unmute_member(self, group_id: str, user_id: str) -> None:
        raise self._unsupported("unmute_member")

    async def kick_member(self, group_id: str, user_id: str) -> None:
        raise self._unsupported("kick_member")

    async def leave_group(self, group_id: str) -> None:
        raise self._unsupported("leave_group")

    # ------------------------------------------------------------------ users

    async def get_user_info(self, user_id: str) -> User:
        raise self._unsupported("get_user_info")

    async def get_friend_list(self) -> list[User]:
        raise self._unsupported("get_friend_list")

    async def approve_friend_request(
        self, request_id: str, approve: bool = True, remark: str | None = None
    ) -> None:
        raise self._unsupported("approve_friend_request")

    async def approve_group_invite(self, request_id: str, approve: bool = True) -> None:
        raise self._unsupported("approve_group_invite")

    # ------------------------------------------------------------------ media

    async def upload_file(self, file_data: bytes, filename: str) -> str:
        raise self._unsupported("upload_file")

    async def get_file_url(self, file_id: str) -> str:
        raise self._unsupported("get_file_url")

    # ------------------------------------------------------------------ pass-through

    async def call_platform_api(self, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a platform-specific action the manifest declares."""
        if action not in {a.action for a in self.platform_actions}:
            raise NotSupportedError(self.adapter_name, f"call_platform_api:{action}")
        return await self.platform_action(action, params or {})

    async def platform_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Adapters with platform actions implement this dispatcher."""
        raise NotSupportedError(self.adapter_name, f"call_platform_api:{action}")
