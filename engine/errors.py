"""Errors the actor runtime raises to callers."""

from __future__ import annotations


class ActorError(Exception):
    """Base class of runtime errors."""


class ActorDeadError(ActorError):
    """The target actor is stopped (or stopped before it answered)."""

    def __init__(self, path: str, detail: str = "actor is not running") -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path


class MailboxFull(ActorError):
    """A bounded mailbox with the ``fail`` policy refused a message."""

    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(f"{path}: mailbox full ({capacity} messages)")
        self.path = path
        self.capacity = capacity


class AskTimeout(ActorError, TimeoutError):
    """No reply arrived within the ask timeout."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(f"{path}: no reply within {timeout:g}s")
        self.path = path
        self.timeout = timeout


class NameTakenError(ActorError):
    """A sibling with this name is alive (or still stopping)."""


class InvalidNameError(ActorError):
    """Actor names are non-empty and contain no '/'."""


class SystemShutDownError(ActorError):
    """The actor system is shut down (or shutting down): nothing new may start."""


class RestartLimitExceeded(ActorError):
    """A child failed more often than its supervisor's restart intensity allows."""

    def __init__(self, path: str, restarts: int, within: float, cause: BaseException) -> None:
        super().__init__(f"{path}: {restarts} restarts within {within:g}s exceeded; last error: {cause!r}")
        self.path = path
        self.cause = cause
