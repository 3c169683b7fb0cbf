"""What a handler may do on the platform: the narrow API behind ``HandlerContext.api``.

A handler never holds the adapter. Every call it makes goes through the bot's
outbound path (``callboard.actors.outbound``): the platform's rate limits (the
bot-wide bucket for every call, the chat's interval for calls that change a
chat), retries with backoff on transient errors, and receipts. Sends,
forwards and ``call_platform_api`` write a receipt, so a run replayed after a
crash skips what it already did; edits, deletions, reactions, moderation and
approvals are idempotent on every platform and queries change nothing, so
they are retried but not receipted (a streaming reply edits its message many
times; a receipt per edit would cost a journal write each).
"""

from __future__ import annotations

from typing import Any, Protocol

from callboard.engine.entities import MessageChain
from callboard.engine.events import MessageReceived
from callboard.engine.platform import COMMON_APIS, MessageResult

#: what ``HandlerAPI.call`` accepts: the common API beyond sending, and platform actions
CALLABLE_APIS: frozenset[str] = frozenset(COMMON_APIS) - {"send_message", "reply_message"} | {
    "call_platform_api"
}
#: calls that are not idempotent on the platform: each gets a receipt
RECEIPTED_APIS: frozenset[str] = frozenset({"forward_message", "call_platform_api", "upload_file"})
#: calls bound to one chat: they keep that chat's send interval
CHAT_APIS: frozenset[str] = frozenset({"edit_message", "delete_message", "forward_message", "add_reaction"})


class HandlerAPI(Protocol):
    """The platform as one handler run sees it."""

    def supports(self, api: str) -> bool:
        """Whether the bot's adapter implements ``api`` (a common API name or
        ``call_platform_api``); calling an unsupported one raises ``NotSupportedError``."""
        ...

    @property
    def max_text_length(self) -> int | None:
        """The platform's longest message, or None when it has no limit."""
        ...

    async def send(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        reply_to: MessageReceived | None = None,
        thread_id: str | None = None,
    ) -> MessageResult:
        """Send to a chat (``reply_to`` quotes that message), in that chat's order."""
        ...

    @property
    def calls_made(self) -> int:
        """Receipted calls (sends, ``RECEIPTED_APIS``) this handler has made in the run so far."""
        ...

    def resume_after(self, calls: int) -> None:
        """Number the next receipted call ``calls + 1``: a run resumed from a record
        of its own progress (an agent's recorded tool rounds) skips the calls those
        rounds made, so its later sends keep the receipt keys they had."""
        ...

    async def call(self, api: str, **params: Any) -> Any:
        """Any other API of ``CALLABLE_APIS`` with its keyword arguments, e.g.
        ``call("edit_message", chat_type=..., chat_id=..., message_id=..., new_content=chain)``
        or ``call("call_platform_api", action="typing", params={...})``."""
        ...
