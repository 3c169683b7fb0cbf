"""ActorRef: the only handle other code holds on an actor."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

from callboard.engine.errors import ActorDeadError, AskTimeout
from callboard.engine.signals import Ask, ExitReason

if TYPE_CHECKING:
    from callboard.engine.cell import ActorCell


class ActorRef:
    """Address of one actor; stays valid (and equal to itself) across restarts."""

    __slots__ = ("_cell", "path")

    def __init__(self, cell: ActorCell, path: str) -> None:
        self._cell = cell
        self.path = path

    def __repr__(self) -> str:
        return f"<ActorRef {self.path}>"

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def is_alive(self) -> bool:
        """False once a stop was requested: the actor accepts no new messages."""
        return not self._cell.closed

    def tell(self, message: Any) -> None:
        """Enqueue without waiting. A stopped target counts a dead letter; a full
        mailbox applies the target's policy (``fail`` raises ``MailboxFull``)."""
        cell = self._cell
        if cell.closed:
            cell.system.dead_letter(self.path, message, "stopped")
            return
        mailbox = cell.mailbox
        if mailbox is None:
            mailbox = cell.mailbox = deque()
        elif cell.capacity is not None and len(mailbox) >= cell.capacity and not cell.make_room(message):
            return
        mailbox.append(message)
        if not cell.scheduled and not cell.suspended:
            cell.schedule()

    async def send(self, message: Any) -> None:
        """Enqueue, waiting while the mailbox is full (backpressure)."""
        cell = self._cell
        while not cell.closed and cell.is_full():
            await cell.wait_for_room()
        self.tell(message)

    async def ask(self, message: Any, timeout: float | None = None) -> Any:
        """Send and await the value the actor's ``receive`` returns (or raises).

        ``timeout`` defaults to the system's ``ask_timeout``; on expiry raises
        ``AskTimeout`` (the message may still be processed later).
        """
        cell = self._cell
        if cell.closed:
            raise ActorDeadError(self.path)
        system = cell.system
        future: asyncio.Future[Any] = system.loop.create_future()
        self.tell(Ask(message, future))
        if timeout is None:
            timeout = system.ask_timeout
        handle = system.clock.call_later(timeout, _expire, future, self.path, timeout)
        try:
            return await future
        finally:
            handle.cancel()

    def stop(self) -> asyncio.Future[ExitReason]:
        """Ask the actor to stop after the messages already queued; later tells
        are dead letters. Returns a future of its exit reason (await or ignore)."""
        return self._cell.request_stop("normal")

    def terminated(self) -> asyncio.Future[ExitReason]:
        """A future that resolves with the exit reason once the actor is gone."""
        return self._cell.termination_future()


def _expire(future: asyncio.Future[Any], path: str, timeout: float) -> None:
    if not future.done():
        future.set_exception(AskTimeout(path, timeout))
