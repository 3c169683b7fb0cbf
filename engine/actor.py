"""The Actor base class users subclass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from callboard.engine.context import ActorContext

if TYPE_CHECKING:
    from callboard.engine.cell import ActorCell
    from callboard.engine.ref import ActorRef

MailboxPolicy = Literal["fail", "drop_oldest", "drop_newest"]

# The cell constructing an actor right now; read by Actor.__new__ so that
# ``self.context`` already works inside ``__init__``. Only touched on the loop thread.
_constructing: list[ActorCell] = []


class Actor:
    """One actor: its state lives in attributes, its behaviour in callbacks.

    As with OTP's ``gen_server``, the runtime owns the loop and calls back:
    ``receive`` per message (one at a time, in arrival order; its return value
    answers an ``ask``), and the lifecycle hooks below. The actor reaches the
    runtime only through ``self.context`` (``ActorContext``). Class attributes
    set the mailbox bound and the policy applied when it is full.
    """

    __slots__ = ("__dict__", "_cell")

    mailbox_capacity: ClassVar[int | None] = 100_000
    mailbox_policy: ClassVar[MailboxPolicy] = "fail"

    _cell: ActorCell

    def __new__(cls, *args: Any, **kwargs: Any) -> Actor:
        self = object.__new__(cls)
        if not _constructing:
            raise TypeError(f"{cls.__name__} is an actor: create it with system.spawn() or context.spawn()")
        self._cell = _constructing[-1]
        return self

    @property
    def ref(self) -> ActorRef:
        return self._cell.ref

    @property
    def context(self) -> ActorContext:
        """This actor's narrow view of the runtime: spawn, stop, watch, timers,
        receive timeout, parent, system, log."""
        cell = self._cell
        context = cell.context
        if context is None:
            context = cell.context = ActorContext(cell)
        return context

    async def receive(self, message: Any) -> Any:
        """Handle one message (gen_server's ``handle_call`` and ``handle_cast``
        in one): the return value answers an ``ask``; an exception goes to the
        supervisor, and the message is not retried."""
        raise NotImplementedError(f"{type(self).__name__} must implement receive()")

    async def on_start(self) -> None:
        """Runs before the first message (and, by default, after a restart):
        gen_server's ``init``. A failure here goes to the supervisor."""

    async def on_stopping(self) -> None:
        """A graceful stop began: the queued messages are handled and the
        children still run. Flush buffers through them here. Not called when
        the actor stops after a failure or is killed."""

    async def on_stop(self) -> None:
        """Runs once when the actor stops, after its children have stopped:
        gen_server's ``terminate``."""

    async def on_restart(self, error: BaseException) -> None:
        """Runs on the fresh instance after a restart caused by ``error``."""
        await self.on_start()

    async def on_receive_timeout(self) -> None:
        """Idle for the receive timeout (gen_server's ``timeout`` info):
        passivate (stop, reason "idle") by default."""
        self._cell.request_stop("idle")
