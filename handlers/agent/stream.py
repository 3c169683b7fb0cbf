"""Streaming a reply into the chat: one message, edited as tokens arrive.

The first visible text sends the message; later pieces edit it, at most once
per ``interval``. A piece that arrives sooner only stores the text; one
trailing edit is armed for when the interval is up, and shows whatever text
there is then (a token burst followed by a pause is shown without waiting for
the next token; no timer per token). ``finish`` cancels a pending edit and
shows the final text. Where the adapter cannot edit, or streaming is off,
nothing is sent until ``finish``, which sends the whole answer. Text longer
than the platform's limit is split: the streamed message keeps the first part
and the rest follows as new messages.
"""

from __future__ import annotations

import asyncio
import contextlib

from callboard.engine.clock import sleep
from callboard.engine.entities import MessageChain
from callboard.engine.platform import MessageResult
from callboard.handlers.context import HandlerContext

#: what a half-streamed answer ends with when its run is cancelled
STOPPED = "(stopped)"
STOP_EDIT_TIMEOUT = 2.0


def split(text: str, limit: int | None) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at a line break or
    a space in the second half of a piece when there is one."""
    if not limit or len(text) <= limit:
        return [text]
    parts = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit + 1)
        if cut <= limit // 2:
            cut = text.rfind(" ", 0, limit + 1)
        if cut <= limit // 2:
            cut = limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return parts


class ReplyStream:
    def __init__(self, ctx: HandlerContext, *, stream: bool, interval: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self.live = stream and ctx.api.supports("edit_message")
        self.limit = ctx.api.max_text_length
        self.text = ""
        self.shown = ""
        self.message: MessageResult | None = None
        self.next_edit = 0.0
        self.edits = 0
        self._pending: asyncio.Task[None] | None = None

    async def delta(self, piece: str) -> None:
        self.text += piece
        if not self.live:
            return
        if self.message is None:
            if not self.text.strip():
                return  # platforms refuse a blank message: start with the first visible text
            self.message = await self.ctx.reply(self._head())
            self.shown = self._head()
            self.next_edit = self.ctx.clock.now() + self.interval
        elif self._pending is None:
            self._pending = asyncio.ensure_future(self._edit_when_due())

    async def _edit_when_due(self) -> None:
        """The one armed edit: at ``next_edit``, show the text as it is then."""
        try:
            wait = self.next_edit - self.ctx.clock.now()
            if wait > 0:
                await sleep(self.ctx.clock, wait)
            await self._edit(self._head())
            self.next_edit = self.ctx.clock.now() + self.interval
        except Exception as exc:  # the final edit in finish() shows the text anyway
            self.ctx.log.warning("streaming edit failed: %r", exc)
        finally:
            self._pending = None

    async def close(self) -> None:
        """Drop a pending edit (the run ends, or was interrupted)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending

    @property
    def message_id(self) -> str | None:
        """The streamed message, once sent."""
        if self.message is None or self.message.message_id is None:
            return None
        return str(self.message.message_id)

    def resume(self, message_id: str | None) -> None:
        """Go on editing a message a previous attempt of this run streamed into."""
        if message_id is not None and self.live:
            self.message = MessageResult(message_id=message_id)

    def reset(self) -> None:
        """A retried model call starts its text again (the message, if any, is reused)."""
        self.text = ""

    async def stopped(self) -> None:
        """The run was cancelled: a half-streamed message says it stopped, so it
        does not read as a finished answer. Best effort, briefly (shutdown may be
        under way)."""
        await self.close()
        if self.message is None or not self.shown:
            return
        try:
            async with asyncio.timeout(STOP_EDIT_TIMEOUT):
                await self._edit(f"{self.shown} … {STOPPED}")
        except Exception as exc:
            self.ctx.log.info("could not mark a stopped answer: %r", exc)

    async def finish(self, text: str) -> None:
        """Show ``text`` as the final answer."""
        await self.close()
        self.text = text
        parts = split(text, self.limit) if text else []
        if not parts:
            return
        if self.message is None or self.message.message_id is None:
            for part in parts:
                await self.ctx.reply(part)
            return
        await self._edit(parts[0])
        for part in parts[1:]:
            await self.ctx.reply(part)

    def _head(self) -> str:
        return split(self.text, self.limit)[0] if self.text else ""

    async def _edit(self, text: str) -> None:
        if self.message is None or self.message.message_id is None or text == self.shown or not text:
            return
        session = self.ctx.session
        await self.ctx.api.call(
            "edit_message",
            chat_type=session.chat_type,
            chat_id=session.chat_id,
            message_id=str(self.message.message_id),
            new_content=MessageChain.of(text),
        )
        self.shown = text
        self.edits += 1
