"""RunAPI: ``HandlerAPI`` for one handler run, over the bot's outbound path.

Sends to the run's own chat are delivered inline (the session already sends
one at a time, in order); sends to any other chat go to that chat's outbound
lane. Other calls go through ``Outlet.invoke`` (rate limits, retries); the
non-idempotent ones (``handlers.api.RECEIPTED_APIS``) also get a receipt
keyed by the run and their place in it, like sends, so a replayed run skips
them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from callboard.actors.messages import SendRequest
from callboard.actors.runtime import BotRuntime
from callboard.engine.entities import MessageChain
from callboard.engine.events import MessageReceived, SessionKey
from callboard.engine.journal import StorageUnavailable
from callboard.engine.platform import MessageResult, NotSupportedError
from callboard.handlers.api import CALLABLE_APIS, CHAT_APIS, RECEIPTED_APIS


class RunAPI:
    """The platform as one run sees it. Receipt keys are ``bot:run:scope:n``:
    ``scope`` is the running rule's place in the bot's list (the session sets
    it), so a rule retried alone, or an async webhook's callback (scope
    ``cb<rule>``), numbers its calls as it did the first time."""

    def __init__(
        self,
        bot: BotRuntime,
        session: SessionKey,
        run_id: int,
        replayed: bool,
        earlier_lost: Callable[[], bool] | None = None,
    ) -> None:
        self._bot = bot
        self._session = session
        self._run_id = run_id
        self._replayed = replayed
        self._earlier_lost = earlier_lost
        self._counts: dict[str, int] = {}
        self.scope = "0"
        #: a call was refused because an earlier run's output was not stored
        self.held_back = False

    def _keep_order(self) -> None:
        """Nothing goes out while an earlier run of this session, whose output was not
        stored after all, waits to run again: its output comes first."""
        if self._earlier_lost is not None and self._earlier_lost():
            self.held_back = True
            raise StorageUnavailable("an earlier run's replies were not stored; they are sent again first")

    @property
    def replayed(self) -> bool:
        return self._replayed

    @property
    def calls_made(self) -> int:
        return self._counts.get(self.scope, 0)

    def resume_after(self, calls: int) -> None:
        self._counts[self.scope] = max(self.calls_made, calls)

    def supports(self, api: str) -> bool:
        return self._bot.api.supports(api)

    @property
    def max_text_length(self) -> int | None:
        return self._bot.api.max_text_length

    def _next_key(self) -> str:
        n = self._counts[self.scope] = self._counts.get(self.scope, 0) + 1
        return f"{self._bot.bot_id}:{self._run_id}:{self.scope}:{n}"

    async def send(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        reply_to: MessageReceived | None = None,
        thread_id: str | None = None,
    ) -> MessageResult:
        self._keep_order()
        bot = self._bot
        request = SendRequest(
            chat_type=chat_type,
            chat_id=chat_id,
            chain=message,
            reply_to=reply_to,
            thread_id=thread_id,
            receipt_key=self._next_key(),
            run_id=self._run_id,
            check_receipt=self._replayed,
        )
        if chat_type == self._session.chat_type and chat_id == self._session.chat_id:
            return await bot.outlet.deliver(request)  # our own chat: inline, already in order
        request.future = asyncio.get_running_loop().create_future()
        bot.outbound.tell(request)  # another chat: that chat's lane keeps its order
        return await request.future

    async def call(self, api: str, **params: Any) -> Any:
        if api not in CALLABLE_APIS:
            raise ValueError(f"{api!r} is not a platform API a handler may call; use send() to send")
        self._keep_order()
        bot = self._bot
        adapter = bot.api
        if not adapter.supports(api):
            raise NotSupportedError(adapter.adapter_name, api)
        method = getattr(adapter, api)
        chat_type = chat = None
        if api in CHAT_APIS:
            chat_type = str(params.get("chat_type") or params.get("to_chat_type") or "")
            chat_id = params.get("chat_id") or params.get("to_chat_id")
            chat = f"{chat_type}:{chat_id}"
        if api not in RECEIPTED_APIS:
            return await bot.outlet.invoke(chat_type, chat, lambda: method(**params))
        key = self._next_key()
        journal = bot.journal
        if self._replayed:
            receipt = await journal.receipt(key)
            if receipt is not None and receipt.status == "sent":
                bot.counters.receipts_skipped += 1
                return _as_before(api, receipt.message_id)
        result = await bot.outlet.invoke(chat_type, chat, lambda: method(**params))
        kept = (
            result.message_id
            if isinstance(result, MessageResult)
            else result
            if api == "upload_file"
            else None
        )
        journal.store_receipt(key, bot.bot_id, self._run_id, chat or api, kept)
        return result


def _as_before(api: str, kept: str | None) -> Any:
    """What a receipted call returned the first time, as far as the receipt keeps it."""
    if api == "forward_message":
        return MessageResult(message_id=kept)
    if api == "upload_file":
        return kept
    return {"skipped": "already done before a restart"}
