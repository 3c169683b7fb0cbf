"""ActorContext: the part of the runtime an actor may use (``self.context``).

An actor is its callbacks, as in OTP's ``gen_server``: the runtime owns the
loop around them (mailbox, turns, supervision, restarts) in ``ActorCell``, and
an actor reaches the runtime only through this narrow context. The cell's
machinery (``run``, ``enqueue``, ``finalize``, ``kill``...) is not on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callboard.engine.actor import Actor
    from callboard.engine.cell import ActorCell
    from callboard.engine.ref import ActorRef
    from callboard.engine.signals import ExitReason
    from callboard.engine.supervision import SupervisorStrategy
    from callboard.engine.system import ActorSystem

_actor_log = logging.getLogger("callboard.actor")


class ActorLog(logging.LoggerAdapter[logging.Logger]):
    """The ``callboard.actor`` logger, each line prefixed with the actor's path."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['path'] if self.extra else '?'}: {msg}", kwargs


class ActorContext:
    """What an actor sees of the runtime; one per actor, kept across restarts.

    Stable across restarts, like the actor's ``ref``: a restarted instance gets
    the same context (and the same mailbox).
    """

    __slots__ = ("_cell", "_log")

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell
        self._log: ActorLog | None = None

    def __repr__(self) -> str:
        return f"<ActorContext {self._cell.path}>"

    @property
    def ref(self) -> ActorRef:
        """This actor's own ref."""
        return self._cell.ref

    @property
    def parent(self) -> ActorRef | None:
        """The parent's ref; None for a top-level actor."""
        parent = self._cell.parent_cell
        return None if parent is None or parent.parent_cell is None else parent.ref

    @property
    def system(self) -> ActorSystem:
        """The actor system (its ``clock``, ``lookup``, ``metrics``)."""
        return self._cell.system

    @property
    def log(self) -> ActorLog:
        """A logger whose lines name this actor's path."""
        log = self._log
        if log is None:
            log = self._log = ActorLog(_actor_log, {"path": self._cell.path})
        return log

    def spawn(
        self,
        cls: type[Actor],
        name: str | None = None,
        *args: Any,
        supervisor: SupervisorStrategy | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start a child and return its ref at once; its ``on_start`` runs before
        its first message. ``supervisor`` is the strategy this actor applies when
        that child fails (default: one_for_one, restart). ``name`` defaults to a
        unique ``$N``; a live sibling of the same name raises ``NameTakenError``."""
        return self._cell.spawn(cls, name, *args, supervisor=supervisor, **kwargs)

    def stop(self, reason: ExitReason = "normal") -> asyncio.Future[ExitReason]:
        """Stop this actor after the messages already queued (then its children,
        then ``on_stop``); returns a future of the exit reason."""
        return self._cell.request_stop(reason)

    def watch(self, ref: ActorRef) -> None:
        """Deliver ``Terminated(ref, reason)`` to this actor when ``ref`` stops
        (at once if it already has)."""
        self._cell.watch(ref)

    def unwatch(self, ref: ActorRef) -> None:
        """Stop watching ``ref``; a ``Terminated`` already queued still arrives."""
        self._cell.unwatch(ref)

    def schedule_once(self, delay: float, message: Any, key: Hashable | None = None) -> Hashable:
        """Deliver ``message`` to this actor after ``delay`` seconds of the
        system's clock; returns the timer's key. Re-using a key supersedes the
        earlier timer, and a cancelled or superseded timer never delivers."""
        return self._cell.schedule_once(delay, message, key)

    def cancel_timer(self, key: Hashable) -> bool:
        """Cancel the timer ``key``; False when none was armed."""
        return self._cell.cancel_timer(key)

    def set_receive_timeout(self, seconds: float | None) -> None:
        """After ``seconds`` without a message or work in progress, call
        ``on_receive_timeout`` (default: stop, reason "idle"); None turns it off."""
        self._cell.set_receive_timeout(seconds)
