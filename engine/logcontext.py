"""Fields that every log line written while they are bound carries (actor path, bot, session,
event ids), for structured logs.

A context variable, so the fields follow the code that is running: the dispatcher's worker
binds the actor path for the actor it runs (a worker runs one actor at a time, even while
that actor awaits), and a session binds its run's ids around the run. Background tasks
started meanwhile inherit a copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any

_NONE: Mapping[str, Any] = MappingProxyType({})
#: the bound fields; the runtime sets ``actor`` for each actor turn
LOG_FIELDS: ContextVar[Mapping[str, Any]] = ContextVar("callboard_log_fields", default=_NONE)


def log_fields() -> Mapping[str, Any]:
    """The fields bound here and now."""
    return LOG_FIELDS.get()


class bound:
    """Add ``fields`` to every log line written inside the block. A class rather than a
    generator context manager: a session enters one per handler run."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        self._token: Token[Mapping[str, Any]] | None = None

    def __enter__(self) -> None:
        self._token = LOG_FIELDS.set({**LOG_FIELDS.get(), **self._fields})

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            LOG_FIELDS.reset(self._token)
            self._token = None
