"""Runtime counters: cheap to bump on the hot path, read by the admin server."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callboard.engine.cell import ActorCell


class RuntimeMetrics:
    """Counters of one actor system.

    ``failures`` and ``restarts`` are keyed by actor class name, so a crash
    storm in sessions does not hide behind a healthy bot.
    """

    __slots__ = (
        "_cells",
        "dead_letters",
        "dropped",
        "failures",
        "live_by_class",
        "messages",
        "restarts",
        "spawned",
        "stale_timers",
        "stopped",
    )

    def __init__(self, cells: dict[str, ActorCell]) -> None:
        self.messages = 0
        self.dead_letters = 0
        self.dropped = 0
        self.spawned = 0
        self.stopped = 0
        self.stale_timers = 0
        self.failures: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        #: live actors per class name, kept at spawn and stop (a count never walks the tree)
        self.live_by_class: Counter[str] = Counter()
        self._cells = cells

    def live_actors(self) -> int:
        return len(self._cells)

    def mailbox_depth(self) -> tuple[int, int]:
        """(total, largest) number of queued messages over live actors; O(actors)."""
        total = largest = 0
        for cell in self._cells.values():
            mailbox = cell.mailbox
            if mailbox:
                depth = len(mailbox)
                total += depth
                largest = max(largest, depth)
        return total, largest

    def snapshot(self) -> dict[str, object]:
        total, largest = self.mailbox_depth()
        return {
            "actors_live": self.live_actors(),
            "messages_total": self.messages,
            "dead_letters_total": self.dead_letters,
            "dropped_total": self.dropped,
            "spawned_total": self.spawned,
            "stopped_total": self.stopped,
            "stale_timers_total": self.stale_timers,
            "failures_total": dict(self.failures),
            "restarts_total": dict(self.restarts),
            "mailbox_depth_total": total,
            "mailbox_depth_max": largest,
        }
