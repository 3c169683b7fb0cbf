"""What both connections share: a Slack payload in, events journaled, then the
acknowledgement. A payload arrives as one of Socket Mode's envelope types
(``events_api``, ``interactive``, ``slash_commands``) or the Events API's
equivalent HTTP request; ``events_of`` converts it, ``ingest`` stores the
events and resolves once they are committed and routed (empty: at once, as
filtered payloads are acknowledged without storing anything).
"""

from __future__ import annotations

import asyncio
from typing import Any

from callboard.adapters.base import AdapterHost
from callboard.adapters.slack.convert import Converter
from callboard.engine.events import Event

EVENTS = "events_api"
INTERACTIVE = "interactive"
SLASH_COMMANDS = "slash_commands"
KINDS = frozenset({EVENTS, INTERACTIVE, SLASH_COMMANDS})

#: events that say the app lost its token: the bot stops with a clear error
REVOKED = frozenset({"app_uninstalled", "tokens_revoked"})


def events_of(converter: Converter, kind: str, payload: dict[str, Any]) -> list[Event]:
    if kind == EVENTS:
        return converter.event_callback(payload)
    if kind == INTERACTIVE:
        return converter.interactive(payload)
    return converter.slash_command(payload)


def revoked(kind: str, payload: dict[str, Any]) -> str | None:
    """The event type when the payload says this app's tokens are gone."""
    if kind != EVENTS:
        return None
    event = payload.get("event")
    event_type = event.get("type") if isinstance(event, dict) else None
    return event_type if isinstance(event_type, str) and event_type in REVOKED else None


def ingest(host: AdapterHost, events: list[Event]) -> asyncio.Future[list[int | None]]:
    if events:
        return host.ingest(events)
    done: asyncio.Future[list[int | None]] = asyncio.get_running_loop().create_future()
    done.set_result([])
    return done
