"""What a handler run sees: the events of the run and what it may do about them.

The session actor builds one ``HandlerContext`` per run. Sends go through the
bot's outbound actor (rate limits, retries, receipts), so a handler never
talks to a platform connection directly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from callboard.engine.entities import MessageChain
from callboard.engine.events import Event, MessageReceived, SessionKey
from callboard.engine.platform import MessageResult, PlatformAPI

if TYPE_CHECKING:
    from callboard.engine.sandbox_api import SandboxTools

SendFn = Callable[[str, str, str | None, MessageChain, MessageReceived | None], Awaitable[MessageResult]]
StateLoader = Callable[[], Awaitable[dict[str, Any]]]


class HandlerContext:
    """One handler run: ``events`` is the burst (one event unless debounced)."""

    def __init__(
        self,
        *,
        bot_id: str,
        session: SessionKey,
        events: list[Event],
        run_id: int,
        api: PlatformAPI,
        send: SendFn,
        load_state: StateLoader,
        stats: Callable[[], dict[str, Any]],
        sandbox: SandboxTools | None = None,
        replayed: bool = False,
    ) -> None:
        self.bot_id = bot_id
        self.session = session
        self.events = events
        self.run_id = run_id
        self.api = api
        self.sandbox = sandbox
        self.replayed = replayed
        self._send = send
        self._load_state = load_state
        self._stats = stats
        self._state: dict[str, Any] | None = None
        self.sent: list[MessageResult] = []

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"callboard.handler.{self.bot_id}")

    @property
    def event(self) -> Event:
        """The last event of the run (the one routing matched)."""
        return self.events[-1]

    @property
    def messages(self) -> list[MessageReceived]:
        return [e for e in self.events if isinstance(e, MessageReceived)]

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.messages]

    def stats(self) -> dict[str, Any]:
        """Live engine figures (sessions, actors, journal) for commands like /stats."""
        return self._stats()

    async def reply(self, message: str | MessageChain, *, quote: bool = False) -> MessageResult:
        """Answer in this session's chat; ``quote`` replies to the last message."""
        chain = MessageChain.of(message) if isinstance(message, str) else message
        origin = self.messages[-1] if quote and self.messages else None
        session = self.session
        return await self.send(
            session.chat_type, session.chat_id, chain, reply_to=origin, thread_id=session.thread or None
        )

    async def send(
        self,
        chat_type: str,
        chat_id: str,
        message: str | MessageChain,
        *,
        reply_to: MessageReceived | None = None,
        thread_id: str | None = None,
    ) -> MessageResult:
        """Send to any chat (``thread_id``: a topic inside it)."""
        chain = MessageChain.of(message) if isinstance(message, str) else message
        result = await self._send(chat_type, chat_id, thread_id, chain, reply_to)
        self.sent.append(result)
        return result

    async def state(self) -> dict[str, Any]:
        """This session's persisted state; changes are saved when the run ends."""
        if self._state is None:
            self._state = await self._load_state()
        return self._state

    @property
    def state_loaded(self) -> dict[str, Any] | None:
        return self._state
