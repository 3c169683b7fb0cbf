"""SessionsActor (the bot's ``sessions`` actor): one SessionActor per session key.

Sessions are spawned on their first event and passivate when idle. An event
for a session that is stopping waits here until it has terminated, then goes
to a fresh one, so passivation never races a new message. On start the
actor replays the bot's unfinished events from the journal, before any new
event, so a restart handles every acknowledged event.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from callboard.actors.messages import Callback, Inbound, ReplayRun, RetryRun, group_replay
from callboard.actors.runtime import BotRuntime
from callboard.actors.session import SessionActor
from callboard.engine.actor import Actor
from callboard.engine.events import SessionKey
from callboard.engine.ref import ActorRef
from callboard.engine.signals import Terminated
from callboard.engine.supervision import Backoff, SupervisorStrategy

log = logging.getLogger("callboard.sessions")

#: a session that keeps failing is restarted with backoff, never given up on
SESSION_STRATEGY = SupervisorStrategy(
    max_restarts=None, backoff=Backoff(min=1.0, max=60.0, factor=2.0, jitter=0.2)
)


def session_actor_name(key: SessionKey) -> str:
    return key.name.replace("/", "%2F")


class SessionsActor(Actor):
    mailbox_capacity = None

    def __init__(self, bot: BotRuntime) -> None:
        self.bot = bot
        self.sessions: dict[SessionKey, ActorRef] = {}
        self.keys: dict[ActorRef, SessionKey] = {}
        self.waiting: dict[SessionKey, deque[Inbound | ReplayRun | RetryRun | Callback]] = {}

    async def on_start(self) -> None:
        self.bot.sessions = self.ref
        if self.bot.cluster is not None:
            return  # the cluster node replays each partition as it takes it over
        pending = await self.bot.journal.pending(self.bot.bot_id)
        if pending:
            log.info("bot %s: replaying %d unfinished events", self.bot.bot_id, len(pending))
        now = self.context.system.clock.now()
        in_flight = self.bot.in_flight
        for item in group_replay(pending):
            for inbound in [item] if isinstance(item, Inbound) else item.inbounds:
                inbound.arrived = now
                in_flight.replayed(inbound.seq, inbound.key)  # counted until done, like new events
            self._deliver(item)

    async def on_stop(self) -> None:
        # after every session has stopped: handlers release their HTTP sessions
        for handler in self.bot.routes.handlers:
            try:
                await handler.close()
            except Exception:
                log.exception("bot %s: closing a %s handler failed", self.bot.bot_id, handler.kind)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Inbound | ReplayRun | RetryRun | Callback):
            self._deliver(message)
        elif isinstance(message, Terminated):
            key = self.keys.pop(message.ref, None)
            if key is None:
                return None
            if self.sessions.get(key) is message.ref:
                del self.sessions[key]
            queued = self.waiting.pop(key, None)
            for item in queued or ():
                self._deliver(item)
        else:
            raise TypeError(f"unexpected message {message!r}")
        return None

    def _deliver(self, item: Inbound | ReplayRun | RetryRun | Callback) -> None:
        key = item.key
        ref = self.sessions.get(key)
        if ref is not None and not ref.is_alive:
            self.waiting.setdefault(key, deque()).append(item)
            return
        if ref is None:
            ref = self.context.spawn(
                SessionActor, session_actor_name(key), key, self.bot, supervisor=SESSION_STRATEGY
            )
            self.context.watch(ref)
            self.sessions[key] = ref
            self.keys[ref] = key
        ref.tell(item)
