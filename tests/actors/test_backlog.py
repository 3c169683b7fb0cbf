"""In-flight accounting: reserve, commit, done, and the three limits."""

from __future__ import annotations

from callboard.actors.backlog import BotBacklog, FleetBacklog
from callboard.engine.events import SessionKey

A = SessionKey("bot", "private", "a")
B = SessionKey("bot", "private", "b")


def test_a_session_is_bounded_and_others_are_not_affected() -> None:
    backlog = BotBacklog(FleetBacklog(1000), max_pending=3)
    assert backlog.reserve([A, A]) is None
    assert backlog.reserve([A]) is None
    busy = backlog.reserve([A])
    assert busy is not None and busy.retry_after > 0 and "too many events waiting (3 per chat)" in str(busy)
    assert backlog.reserve([B]) is None
    assert (backlog.by_session[A], backlog.by_session[B], backlog.total) == (3, 1, 4)
    assert backlog.refused == 1


def test_all_or_nothing_per_ingest() -> None:
    backlog = BotBacklog(FleetBacklog(1000), max_pending=2)
    assert backlog.reserve([A, B, A, A]) is not None  # three for A: nothing is counted
    assert backlog.total == 0 and backlog.by_session == {}


def test_counted_out_when_done_once_or_at_once_when_not_stored() -> None:
    fleet = FleetBacklog(1000)
    backlog = BotBacklog(fleet, max_pending=10)
    backlog.reserve([A, A, B])
    backlog.committed(A, 1)
    backlog.committed(A, None)  # a duplicate delivery, or a failed append
    backlog.committed(B, 2)
    assert (backlog.total, fleet.total) == (2, 2)
    backlog.done([1, 2])
    backlog.done([1, 2, 99])  # repeated or unknown seqs change nothing
    assert (backlog.total, fleet.total, backlog.by_session, backlog.seqs) == (0, 0, {}, {})


def test_replayed_events_count_until_done() -> None:
    backlog = BotBacklog(FleetBacklog(1000), max_pending=2)
    backlog.replayed(7, A)
    backlog.replayed(7, A)  # the same event once
    assert backlog.reserve([A]) is None
    assert backlog.reserve([A]) is not None
    backlog.done([7])
    assert backlog.total == 1


def test_shedding_turns_heavy_chats_away_first_then_the_ceiling_everyone() -> None:
    fleet = FleetBacklog(20, shed_at=0.5, shed_session=4)
    one = BotBacklog(fleet, max_pending=100)
    other = BotBacklog(fleet, max_pending=100)  # another bot shares the ceiling
    assert one.reserve([A] * 8) is None  # 8 in flight: below the shedding line (10)
    assert other.reserve([B] * 2) is None
    shed = one.reserve([A])  # past the line: A already holds 8 >= 4
    assert shed is not None and "shedding" in str(shed)
    assert other.reserve([B]) is None  # B holds 2: a light chat still gets in
    assert other.reserve([SessionKey("bot", "private", f"c{i}") for i in range(9)]) is None
    assert fleet.total == 20
    full = other.reserve([SessionKey("bot", "private", "new")])
    assert full is not None and "backlog is full (20 events)" in str(full) and full.retry_after >= 1
    one.close()
    assert fleet.total == 12
