"""What a handler run sees: the events of the run and what it may do about them.

The session actor builds one ``HandlerContext`` per run. ``api`` is the narrow
``HandlerAPI``: every platform call goes through the bot's outbound actor (rate
limits, retries, receipts), so a handler never talks to the adapter directly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from callboard.engine.clock import Clock
from callboard.engine.entities import MessageChain
from callboard.engine.events import Event, MessageReceived, SessionKey
from callboard.engine.platform import MessageResult
from callboard.handlers.api import HandlerAPI

if TYPE_CHECKING:
    from callboard.engine.sandbox_api import SandboxTools

StateLoader = Callable[[], Awaitable[dict[str, Any]]]
StateSaver = Callable[[dict[str, Any]], Awaitable[None]]
#: adds to one of the bot's handler usage figures (tokens, tool calls, ...)
CountFn = Callable[[str, float], None]


class RunFailed(Exception):
    """A handler's run failed for a reason it has already handled (told the
    user, recorded the delivery): logged with the event ids, no stack trace."""


def _ignore(name: str, amount: float) -> None:
    return None


class HandlerContext:
    """One handler run: ``events`` is the burst (one event unless debounced)."""

    def __init__(
        self,
        *,
        bot_id: str,
        session: SessionKey,
        events: list[Event],
        run_id: int,
        api: HandlerAPI,
        clock: Clock,
        load_state: StateLoader,
        save_state: StateSaver,
        stats: Callable[[], dict[str, Any]],
        sandbox: SandboxTools | None = None,
        replayed: bool = False,
        count: CountFn = _ignore,
    ) -> None:
        self.bot_id = bot_id
        self.session = session
        self.events = events
        self.run_id = run_id
        self.api = api
        self.clock = clock
        self.sandbox = sandbox
        self.replayed = replayed
        self._load_state = load_state
        self._save_state = save_state
        self.count = count
        #: which of the bot's rules is running (set by the session for each matched rule)
        self.handler_index = 0
        #: problems that did not fail the run (a webhook's bad action); the session records them
        self.errors: list[str] = []
        #: a plugin listener called ``prevent_default()``: the rules after this one do not run
        self.default_prevented = False
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
        # the api directly, not through ``send``: one coroutine less on every reply
        result = await self.api.send(
            session.chat_type, session.chat_id, chain, reply_to=origin, thread_id=session.thread or None
        )
        self.sent.append(result)
        return result

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
        result = await self.api.send(chat_type, chat_id, chain, reply_to=reply_to, thread_id=thread_id)
        self.sent.append(result)
        return result

    async def state(self) -> dict[str, Any]:
        """This session's persisted state; changes are saved when the run ends."""
        if self._state is None:
            self._state = await self._load_state()
        return self._state

    def record_errors(self, errors: list[str]) -> None:
        """Problems to keep on the run without failing it."""
        self.errors.extend(errors)

    async def checkpoint(self) -> None:
        """Save the state now, not only when the run ends: what a run must not
        lose to a crash in its middle (an agent's recorded tool results)."""
        if self._state is not None:
            await self._save_state(self._state)

    @property
    def state_loaded(self) -> dict[str, Any] | None:
        return self._state
