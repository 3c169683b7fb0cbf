"""Prompt templates: named fields of the event and the session, checked when the
fleet file is loaded, and the text a non-message event becomes.

Message events send the burst's text as the user turn (a debounced burst is
one turn; in a group each line is prefixed with its sender). Any other event
is described by ``event_prompt`` (default ``{event_summary}``), so an agent can
welcome a member or answer feedback.
"""

from __future__ import annotations

import datetime
import string
from collections.abc import Callable, Collection
from typing import Any

from callboard.engine.events import (
    BotInvitedToGroup,
    BotRemovedFromGroup,
    Event,
    FeedbackReceived,
    FriendRequestReceived,
    GroupInfoUpdated,
    MemberBanned,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessageReaction,
    MessageReceived,
    PlatformSpecific,
    SessionKey,
)

#: placeholders a prompt template may use
FIELDS: dict[str, str] = {
    "bot_name": "the bot's id",
    "user_name": "who caused the event (nickname, else id)",
    "user_id": "their id",
    "group_name": "the group's name (empty in private chats)",
    "chat_type": "private or group",
    "chat_id": "the chat's id",
    "event_type": "e.g. group.member_joined",
    "event_summary": "one sentence describing the event",
    "time": "the event's time, UTC, ISO 8601",
    "text": "the burst's text (message events)",
}


def check_template(value: str) -> str:
    """Raise ValueError naming an unknown or malformed placeholder."""
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError(f"invalid template: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            raise ValueError(f"unknown placeholder {{{field}}}; use one of {', '.join(sorted(FIELDS))}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{field}}} takes no format spec or conversion")
    return value


def _name(user: Any) -> str:
    return str(user.nickname or user.id) if user is not None else ""


def summarize(event: Event) -> str:
    """One plain sentence about ``event``, for prompts and logs."""
    who = _name(event.actor())
    group = getattr(event, "group", None)
    where = f" the group {group.name or group.id}" if group is not None else " the chat"
    if isinstance(event, MessageReceived):
        return f"{who} wrote: {event.text}"
    if isinstance(event, MessageEdited):
        return f"{who} edited message {event.message_id} to: {event.new_content.text}"
    if isinstance(event, MessageDeleted):
        return f"message {event.message_id} was deleted in{where}"
    if isinstance(event, MessageReaction):
        verb = "reacted" if event.is_add else "removed the reaction"
        return f"{who} {verb} {event.reaction} to message {event.message_id}"
    if isinstance(event, FeedbackReceived):
        kind = {1: "liked", 2: "disliked", 3: "withdrew feedback on"}.get(event.feedback_type, "rated")
        extra = f" saying: {event.feedback_content}" if event.feedback_content else ""
        return f"user {event.user_id or '?'} {kind} message {event.message_id or '?'}{extra}"
    if isinstance(event, MemberJoined):
        return f"{who} joined{where}"
    if isinstance(event, MemberLeft):
        return f"{who} {'was removed from' if event.is_kicked else 'left'}{where}"
    if isinstance(event, MemberBanned):
        return f"{who} was muted in{where}"
    if isinstance(event, GroupInfoUpdated):
        return f"the settings of{where} changed ({', '.join(event.changed_fields) or 'details unknown'})"
    if isinstance(event, FriendRequestReceived):
        return f"{who} sent a friend request" + (f": {event.message}" if event.message else "")
    if isinstance(event, BotInvitedToGroup):
        return f"the bot was invited to{where}"
    if isinstance(event, BotRemovedFromGroup):
        return f"the bot was removed from{where}"
    if isinstance(event, PlatformSpecific):
        return f"platform event {event.qualified_type}"
    return f"event {event.type}" + (f" by {who}" if who else "")


def burst_text(events: list[Event], group: bool) -> str:
    """The user turn of a message burst: one line per message, with its sender in groups."""
    lines = []
    for event in events:
        if isinstance(event, MessageReceived):
            lines.append(f"{_name(event.sender)}: {event.text}" if group else event.text)
    return "\n".join(lines)


def placeholders(template: str) -> set[str]:
    """The field names ``template`` uses (it was checked at load)."""
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def fields(
    bot_id: str, session: SessionKey, events: list[Event], names: Collection[str] = FIELDS
) -> dict[str, str]:
    """The values of ``names`` for this run (only those: a summary or a time
    is not built for a prompt that does not use it)."""
    event = events[-1]
    user = event.actor()
    group = getattr(event, "group", None)
    getters: dict[str, Callable[[], str]] = {
        "bot_name": lambda: bot_id,
        "user_name": lambda: _name(user),
        "user_id": lambda: str(user.id) if user is not None else "",
        "group_name": lambda: str(group.name or group.id) if group is not None else "",
        "chat_type": lambda: session.chat_type,
        "chat_id": lambda: session.chat_id,
        "event_type": lambda: event.type,
        "event_summary": lambda: summarize(event),
        "time": lambda: datetime.datetime.fromtimestamp(event.timestamp, datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "text": lambda: burst_text(events, session.chat_type == "group"),
    }
    return {name: getters[name]() for name in names}


def render(template: str, values: dict[str, str]) -> str:
    return template.format_map(values)
