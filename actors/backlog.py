"""Backlog accounting: how many events are in flight (accepted, not yet handled), per
session, per bot and across the fleet, and whether one more may come in.

An event is counted from ``BotHost.ingest`` (before its append, so the count bounds
what the journal queue, the router and the sessions hold) until its session marks it
done. A refusal is an ``AdapterBusy`` the adapter turns into "not acknowledged, retry
later" (a ``busy`` frame, an HTTP 429, no ack), so nothing refused is stored.

Limits: ``session.max_pending`` events per session; ``engine.backlog.max_events`` for
the whole engine, with load shedding from ``shed_at`` of it: past that, a session that
already holds ``shed_session`` events is refused, so heavy senders are turned away
first and a quiet chat still gets its message in until the hard ceiling.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from callboard.adapters.base import AdapterBusy
from callboard.engine.events import SessionKey

#: defaults of ``engine.backlog.max_events`` and ``session.max_pending``
MAX_EVENTS = 100_000
MAX_PENDING = 500
#: retry advice: a session's own backlog drains at its handler's pace; the fleet's takes longer
SESSION_RETRY_AFTER = 0.5
FLEET_RETRY_AFTER = 5.0


class FleetBacklog:
    """Events in flight across every bot of the engine."""

    def __init__(self, max_events: int, shed_at: float = 0.8, shed_session: int = 8) -> None:
        self.max_events = max_events
        self.shed_from = int(max_events * shed_at)
        self.shed_session = shed_session
        self.total = 0
        self.refused = 0


class BotBacklog:
    """One bot's events in flight, by session."""

    def __init__(self, fleet: FleetBacklog, max_pending: int) -> None:
        self.fleet = fleet
        self.max_pending = max_pending
        self.by_session: dict[SessionKey, int] = {}
        self.seqs: dict[int, SessionKey] = {}  # committed, not yet done
        self.total = 0
        self.refused = 0

    def reserve(self, keys: Sequence[SessionKey]) -> AdapterBusy | None:
        """Count ``keys``' events in, all or none; the refusal to raise otherwise."""
        fleet = self.fleet
        if fleet.total + len(keys) > fleet.max_events:
            return self._refuse(
                len(keys), f"the engine's backlog is full ({fleet.max_events} events)", FLEET_RETRY_AFTER
            )
        shedding = fleet.total + len(keys) > fleet.shed_from
        limit = min(self.max_pending, fleet.shed_session) if shedding else self.max_pending
        wanted: dict[SessionKey, int] = {}
        for key in keys:
            wanted[key] = wanted.get(key, 0) + 1
        for key, count in wanted.items():
            if self.by_session.get(key, 0) + count > limit:
                reason = (
                    "the engine is shedding load" if shedding else "this chat has too many events waiting"
                )
                return self._refuse(len(keys), f"{reason} ({limit} per chat)", SESSION_RETRY_AFTER)
        for key, count in wanted.items():
            self.by_session[key] = self.by_session.get(key, 0) + count
        self.total += len(keys)
        fleet.total += len(keys)
        return None

    def _refuse(self, count: int, reason: str, retry_after: float) -> AdapterBusy:
        self.refused += count
        self.fleet.refused += count
        return AdapterBusy(reason, retry_after)

    def committed(self, key: SessionKey, seq: int | None) -> None:
        """A reserved event was appended (``seq``), or was a duplicate or failed (None)."""
        if seq is None or seq in self.seqs:
            self._release(key)
        else:
            self.seqs[seq] = key

    def replayed(self, seq: int, key: SessionKey) -> None:
        """An unfinished event taken from the journal at start: counted until done."""
        if seq not in self.seqs:
            self.seqs[seq] = key
            self.by_session[key] = self.by_session.get(key, 0) + 1
            self.total += 1
            self.fleet.total += 1

    def done(self, seqs: Iterable[int]) -> None:
        """Events a session marked done (each counted out once, whatever repeats)."""
        for seq in seqs:
            key = self.seqs.pop(seq, None)
            if key is not None:
                self._release(key)

    def _release(self, key: SessionKey) -> None:
        left = self.by_session.get(key, 0) - 1
        if left > 0:
            self.by_session[key] = left
        else:
            self.by_session.pop(key, None)
        self.total -= 1
        self.fleet.total -= 1

    def close(self) -> None:
        """The bot stopped: its events no longer count against the fleet."""
        self.fleet.total -= self.total
        self.total = 0
        self.by_session.clear()
        self.seqs.clear()
