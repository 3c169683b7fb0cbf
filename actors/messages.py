"""Messages between the domain actors."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from callboard.engine.entities import MessageChain
from callboard.engine.events import Event, MessageReceived, SessionKey
from callboard.engine.journal import PendingEvent
from callboard.engine.platform import MessageResult


@dataclass(slots=True)
class Inbound:
    """A committed event on its way to its session."""

    seq: int
    event: Event
    key: SessionKey
    arrived: float  # clock.now() when the router saw it; debounce deadlines count from here
    replayed: bool = False  # from the journal after a restart: handled alone, not debounced


@dataclass(slots=True)
class ReplayRun:
    """Events a previous process had already started answering: run them
    again as exactly that run, so sends already done are skipped."""

    run_id: int
    inbounds: list[Inbound]

    @property
    def key(self) -> SessionKey:
        return self.inbounds[0].key


@dataclass(slots=True)
class RetryRun:
    """Admin -> session: run a failed run's events again through one rule's
    handler (its place in the bot's list), as that run, so what it already
    sent is skipped and a webhook keeps its Idempotency-Key."""

    run_id: int
    inbounds: list[Inbound]
    handler_index: int

    @property
    def key(self) -> SessionKey:
        return self.inbounds[0].key


@dataclass(slots=True)
class Callback:
    """Admin -> session: an async webhook receiver's answer to an earlier
    delivery, whose actions run in that delivery's session."""

    key: SessionKey
    run_id: int
    handler_index: int
    events: list[Event]
    actions: list[Any]


@dataclass(slots=True, frozen=True)
class RunEnded:
    """A session's background run (busy policy collect/interrupt) finished."""

    generation: int


@dataclass(slots=True, frozen=True)
class CommitLost:
    """The transaction holding a run's done mark (and its stored replies) did not
    commit: the session runs that run again, before anything after it."""


@dataclass(slots=True)
class Add:
    """Session -> debounce window: one more message for the burst."""

    inbound: Inbound
    close_now: bool


@dataclass(slots=True, frozen=True)
class Due:
    """Debounce window -> session: my deadline passed (stale if gen moved on)."""

    window: str
    generation: int


class TakeAll:
    """Session -> debounce window (ask): hand over the burst and stop."""

    __slots__ = ()


class Ping:
    """Fleet -> bot (ask): answered with True once the bot's ``on_start``
    (adapter, children) has run."""

    __slots__ = ()


@dataclass(slots=True)
class SendRequest:
    """A handler's send on its way to the platform, through the outbound actor."""

    chat_type: str
    chat_id: str
    chain: MessageChain
    reply_to: MessageReceived | None
    thread_id: str | None
    receipt_key: str
    run_id: int
    check_receipt: bool
    #: set when the request travels to a lane; the sender awaits it
    future: asyncio.Future[MessageResult] | None = field(default=None, repr=False)


def group_replay(pending: list[PendingEvent]) -> list[Inbound | ReplayRun]:
    """Turn replayed events into deliveries: the events of a recorded burst
    become one ``ReplayRun``; every other event is replayed on its own, as the
    single-event run it was (or would have been), so receipt keys match."""
    out: list[Inbound | ReplayRun] = []
    runs: dict[int, ReplayRun] = {}
    for item in pending:
        inbound = Inbound(item.seq, item.event, item.event.session_key(), 0.0, replayed=True)
        if item.run_id is None:
            out.append(inbound)
            continue
        run = runs.get(item.run_id)
        if run is None:
            run = runs[item.run_id] = ReplayRun(item.run_id, [])
            out.append(run)
        run.inbounds.append(inbound)
    return out
