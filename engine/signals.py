"""Messages the runtime itself delivers to actors, and its internal envelopes."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from callboard.engine.ref import ActorRef

#: Why an actor terminated: "normal" (stopped), "idle" (receive timeout),
#: "shutdown" (system shutdown), or the exception that made its supervisor stop it.
ExitReason = str | BaseException


class Terminated:
    """Delivered to every watcher when a watched actor has fully stopped."""

    __slots__ = ("reason", "ref")

    def __init__(self, ref: ActorRef, reason: ExitReason) -> None:
        self.ref = ref
        self.reason = reason

    def __repr__(self) -> str:
        return f"Terminated({self.ref.path}, {self.reason!r})"


class ReceiveTimeout:
    """Enqueued when an actor with a receive timeout has been idle that long.

    The runtime hands it to ``Actor.on_receive_timeout`` (default: stop), not to
    ``receive``. A message that arrives behind it cancels it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "ReceiveTimeout()"


RECEIVE_TIMEOUT = ReceiveTimeout()


class Ask:
    """A message whose sender awaits the value ``receive`` returns."""

    __slots__ = ("future", "message")

    def __init__(self, message: Any, future: asyncio.Future[Any]) -> None:
        self.message = message
        self.future = future

    def __repr__(self) -> str:
        return f"Ask({self.message!r})"


class TimerFired:
    """A timer's message, fenced by the generation it was armed with."""

    __slots__ = ("generation", "key", "message")

    def __init__(self, key: Hashable, generation: int, message: Any) -> None:
        self.key = key
        self.generation = generation
        self.message = message

    def __repr__(self) -> str:
        return f"TimerFired({self.key!r}, gen={self.generation}, {self.message!r})"
