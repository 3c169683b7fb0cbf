"""Slack payloads -> engine events.

Three kinds of payload arrive, over Socket Mode or the Events API alike:
``event_callback`` (the Events API: messages, edits, reactions, members...),
interactivity (``block_actions``, shortcuts, view submissions) and slash
commands. Each becomes zero or more events; anything without a neutral form
is a ``platform.specific`` event, never dropped. What is filtered on purpose:
messages of this bot and of other bots (no echo loops between bots), and, with
``channel_messages: mention``, channel messages that do not mention the bot.

Dedup keys: a message is ``msg:<team>:<channel>:<ts>``, so the ``message`` and
the ``app_mention`` event Slack sends for one mention collapse to one event in
the journal, and a redelivery of either is dropped; every other event is
``ev:<event_id>`` (the Events API's retries and Socket Mode's redeliveries
keep the event_id). Interactions key by user, action and ``action_ts``.

Message text is Slack's mrkdwn with ``<...>`` escapes: ``<@U1>`` becomes
``At``, ``<!channel>``/``<!here>``/``<!everyone>`` ``AtAll``, links ``Plain``
with a ``url`` extra; ``&amp; &lt; &gt;`` are unescaped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from callboard.engine.entities import (
    At,
    AtAll,
    ChatType,
    Component,
    File,
    Group,
    Image,
    MessageChain,
    Plain,
    User,
    Voice,
)
from callboard.engine.events import (
    BotInvitedToGroup,
    BotRemovedFromGroup,
    Event,
    FeedbackReceived,
    GroupInfoUpdated,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessageReaction,
    MessageReceived,
    PlatformSpecific,
)

log = logging.getLogger("callboard.slack")

ADAPTER = "slack"

#: message subtypes that are something someone said
_SAID = frozenset({None, "file_share", "thread_broadcast", "me_message"})
#: block action values that are feedback on an answer (feedback_type 1, 2, 3)
_FEEDBACK = {"like": 1, "thumbs_up": 1, "+1": 1, "dislike": 2, "thumbs_down": 2, "-1": 2, "cancel": 3}
_ESCAPE = re.compile(r"<([^<>]*)>")
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the bot is on Slack (from auth.test)."""

    user_id: str  # the bot user, U...
    bot_id: str  # the bot, B...
    team_id: str
    name: str = ""


def unescape(text: str) -> str:
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    return text


def kind_of(channel: str, channel_type: str | None = None) -> str:
    """Slack's channel type: im, mpim, channel (public) or group (private)."""
    if channel_type in ("im", "mpim", "channel", "group"):
        return channel_type
    if channel_type == "C":
        return "channel"
    if channel_type == "G":
        return "group"
    if channel.startswith("D"):
        return "im"
    return "group" if channel.startswith("G") else "channel"


def chat_type_of(kind: str) -> ChatType:
    return ChatType.PRIVATE if kind == "im" else ChatType.GROUP


def text_components(text: str, me: str = "") -> list[Component]:
    """Slack's escaped text as components (see the module docstring). A
    mention of the bot (``me``) at the start is kept as ``At`` and the space
    after it dropped, so ``<@BOT> /help`` reads as the command ``/help``."""
    out: list[Component] = []
    position = 0
    for match in _ESCAPE.finditer(text):
        if match.start() > position:
            out.append(Plain(text=unescape(text[position : match.start()])))
        position = match.end()
        body, _, label = match.group(1).partition("|")
        if body.startswith("@"):
            out.append(At(target=body[1:], display=label or None))
        elif body in ("!channel", "!here", "!everyone"):
            out.append(AtAll(raw={"scope": body[1:]}))
        elif body.startswith("!subteam^"):
            out.append(Plain(text=unescape(label or body), raw={"subteam": body.removeprefix("!subteam^")}))
        elif body.startswith("!"):
            out.append(Plain(text=unescape(label or body)))  # dates and other specials: their fallback
        elif body.startswith("#"):
            out.append(Plain(text=f"#{unescape(label or body[1:])}", raw={"channel": body[1:]}))
        else:
            url = unescape(body)
            out.append(Plain(text=unescape(label) if label else url, raw={"url": url}))
    if position < len(text):
        out.append(Plain(text=unescape(text[position:])))
    if me and len(out) >= 2 and isinstance(out[0], At) and out[0].target == me and isinstance(out[1], Plain):
        stripped = out[1].text.lstrip()
        out[1] = Plain(text=stripped, raw=out[1].raw)
        if not stripped and not out[1].raw:
            del out[1]
    return _merge(out)


def _merge(parts: list[Component]) -> list[Component]:
    merged: list[Component] = []
    for part in parts:
        previous = merged[-1] if merged else None
        if isinstance(part, Plain) and isinstance(previous, Plain) and not part.raw and not previous.raw:
            merged[-1] = Plain(text=previous.text + part.text)
        elif not (isinstance(part, Plain) and not part.text and not part.raw):
            merged.append(part)
    return merged


def file_component(file: dict[str, Any]) -> Component:
    """A shared file; its content is fetched on demand (``get_file_url`` and the
    ``download_file`` action) with the bot token."""
    mime = file.get("mimetype") or None
    raw = {k: file[k] for k in ("name", "title", "filetype", "permalink", "url_private") if file.get(k)}
    file_id = str(file.get("id") or "")
    if isinstance(mime, str) and mime.startswith("image/"):
        return Image(
            file_id=file_id, mime=mime, width=file.get("original_w"), height=file.get("original_h"), raw=raw
        )
    if isinstance(mime, str) and mime.startswith("audio/"):
        duration = file.get("duration_ms")
        return Voice(
            file_id=file_id,
            mime=mime,
            duration=duration / 1000 if isinstance(duration, int | float) else None,
            raw=raw,
        )
    return File(name=str(file.get("name") or ""), file_id=file_id, size=file.get("size"), mime=mime, raw=raw)


def user_of(message: dict[str, Any]) -> User:
    profile = message.get("user_profile") or {}
    nickname = profile.get("display_name") or profile.get("real_name") or ""
    return User(id=str(message.get("user") or ""), nickname=nickname, username=profile.get("name") or None)


def _ts(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Converter:
    """Converts one bot's payloads (``bot_id`` is the engine's bot id)."""

    def __init__(self, bot_id: str, me: Identity, *, channel_messages: str, thread_sessions: bool) -> None:
        self.bot_id = bot_id
        self.me = me
        self.all_channel_messages = channel_messages == "all"
        self.thread_sessions = thread_sessions
        self._mention = f"<@{me.user_id}"
        #: messages filtered on purpose (own, other bots', unmentioned channel chatter)
        self.filtered = 0

    # ------------------------------------------------------------------ entry points

    def event_callback(self, payload: dict[str, Any]) -> list[Event]:
        """One Events API payload (``type: event_callback``)."""
        event = payload.get("event")
        event_id = str(payload.get("event_id") or "")
        team = str(payload.get("team_id") or self.me.team_id)
        if not isinstance(event, dict):
            return self._keyed(f"ev:{event_id}", [self._specific("event_callback", payload, {})])
        common: dict[str, Any] = {
            "bot_id": self.bot_id,
            "adapter": ADAPTER,
            "raw": {"event_id": event_id, "team_id": team},
        }
        if isinstance(payload.get("event_time"), int | float):
            common["timestamp"] = float(payload["event_time"])
        try:
            events, key = self._event(event, team, event_id, common)
        except Exception:  # one odd payload must not wedge the connection: keep it, raw
            log.exception(
                "%s: could not convert Slack event %s; kept as platform.specific", self.bot_id, event_id
            )
            events, key = (
                [self._specific(f"unconverted.{event.get('type')}", event, common)],
                f"ev:{event_id}",
            )
        if not events:
            self.filtered += 1
        return self._keyed(key, events)

    def interactive(self, payload: dict[str, Any]) -> list[Event]:
        """An interactivity payload: block actions become feedback, the rest platform.specific."""
        kind = str(payload.get("type") or "interactive")
        user = payload.get("user") or {}
        user_id = str(user.get("id") or "")
        channel = (payload.get("channel") or {}).get("id") or (payload.get("container") or {}).get(
            "channel_id"
        )
        common: dict[str, Any] = {
            "bot_id": self.bot_id,
            "adapter": ADAPTER,
            "raw": {"team_id": str((payload.get("team") or {}).get("id") or self.me.team_id)},
        }
        if kind == "block_actions":
            container = payload.get("container") or {}
            events: list[Event] = []
            for action in payload.get("actions") or []:
                value = action.get("value") or (action.get("selected_option") or {}).get("value")
                events.append(
                    FeedbackReceived(
                        feedback_id=str(action.get("action_id") or ""),
                        feedback_type=_FEEDBACK.get(str(value or "").lower(), 0),
                        feedback_content=value,
                        user_id=user_id or None,
                        chat_type=chat_type_of(kind_of(channel)) if channel else None,
                        chat_id=channel,
                        message_id=container.get("message_ts"),
                        **self._with_raw(
                            common,
                            action_id=action.get("action_id"),
                            block_id=action.get("block_id"),
                            action_type=action.get("type"),
                            trigger_id=payload.get("trigger_id"),
                            response_url=payload.get("response_url"),
                            thread_ts=container.get("thread_ts"),
                        ),
                    )
                )
            first = (payload.get("actions") or [{}])[0]
            when = first.get("action_ts") or payload.get("trigger_id")
            key = f"act:{user_id}:{when}:{first.get('action_id')}"
            return self._keyed(key, events or [self._specific(kind, payload, common)])
        key = f"int:{kind}:{payload.get('trigger_id') or (payload.get('view') or {}).get('hash') or user_id}"
        return self._keyed(key, [self._specific(kind, payload, common, channel)])

    def slash_command(self, payload: dict[str, Any]) -> list[Event]:
        common: dict[str, Any] = {
            "bot_id": self.bot_id,
            "adapter": ADAPTER,
            "raw": {"team_id": str(payload.get("team_id") or self.me.team_id)},
        }
        channel = payload.get("channel_id")
        event = self._specific(
            "slash_command", payload, common, channel if isinstance(channel, str) else None
        )
        return self._keyed(f"cmd:{payload.get('trigger_id') or payload.get('command')}", [event])

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _keyed(key: str, events: list[Event]) -> list[Event]:
        for index, event in enumerate(events):
            event.dedup_key = key if index == 0 else f"{key}:{index}"
        return events

    @staticmethod
    def _with_raw(common: dict[str, Any], **raw: Any) -> dict[str, Any]:
        return {**common, "raw": {**common["raw"], **{k: v for k, v in raw.items() if v is not None}}}

    def _specific(
        self, action: str, data: dict[str, Any], common: dict[str, Any], channel: str | None = None
    ) -> PlatformSpecific:
        if not common:
            common = {"bot_id": self.bot_id, "adapter": ADAPTER}
        if channel:
            return PlatformSpecific(
                action=action, data=data, chat_type=chat_type_of(kind_of(channel)), chat_id=channel, **common
            )
        return PlatformSpecific(action=action, data=data, **common)

    def _in_chat(self, channel: str, channel_type: str | None, thread_ts: Any) -> dict[str, Any]:
        """Where an event happened. ``thread_ts`` comes from the payload as it is: anything but
        a string (Slack's ts always are) is no thread, never part of a session key."""
        kind = kind_of(channel, channel_type)
        threaded = self.thread_sessions and isinstance(thread_ts, str) and thread_ts
        return {
            "chat_type": chat_type_of(kind),
            "chat_id": channel,
            "thread_id": thread_ts if threaded else None,
            "group": Group(id=channel, raw={"channel_type": kind}) if kind != "im" else None,
        }

    def _from_bots(self, message: dict[str, Any]) -> bool:
        """Ours or another bot's: never handled (no echo loops)."""
        return (
            bool(message.get("bot_id"))
            or message.get("subtype") == "bot_message"
            or (message.get("user") == self.me.user_id)
        )

    def _mentions_me(self, message: dict[str, Any]) -> bool:
        return self._mention in str(message.get("text") or "")

    def _wanted(self, kind: str, message: dict[str, Any]) -> bool:
        """Channel messages in ``mention`` mode only when they mention the bot."""
        return kind not in ("channel", "group") or self.all_channel_messages or self._mentions_me(message)

    # ------------------------------------------------------------------ events

    def _event(
        self, event: dict[str, Any], team: str, event_id: str, common: dict[str, Any]
    ) -> tuple[list[Event], str]:
        kind = event.get("type")
        by_id = f"ev:{event_id}"
        if kind == "message":
            return self._message(event, team, event_id, common)
        if kind == "app_mention":
            if self._from_bots(event):
                return [], by_id
            return [self.message_event(event, event.get("channel_type"), common)], self._message_key(
                team, event
            )
        if kind in ("reaction_added", "reaction_removed"):
            return self._reaction(event, common), by_id
        if kind in ("member_joined_channel", "member_left_channel"):
            return [self._membership(event, common)], by_id
        if kind in ("channel_rename", "group_rename"):
            channel = event.get("channel") or {}
            group = Group(id=str(channel.get("id") or ""), name=str(channel.get("name") or ""))
            return [GroupInfoUpdated(group=group, changed_fields=["name"], **common)], by_id
        channel = event.get("channel")
        return [
            self._specific(str(kind), event, common, channel if isinstance(channel, str) else None)
        ], by_id

    @staticmethod
    def _message_key(team: str, message: dict[str, Any]) -> str:
        return f"msg:{team}:{message.get('channel')}:{message.get('ts')}"

    def message_event(
        self, message: dict[str, Any], channel_type: str | None, common: dict[str, Any] | None = None
    ) -> MessageReceived:
        """A message (an event's, or one read back with conversations.history) as ``message.received``."""
        if common is None:
            common = {"bot_id": self.bot_id, "adapter": ADAPTER, "raw": {"team_id": self.me.team_id}}
        channel = str(message.get("channel") or "")
        thread_ts = message.get("thread_ts")
        parts = text_components(str(message.get("text") or ""), self.me.user_id)
        parts.extend(file_component(f) for f in message.get("files") or [] if isinstance(f, dict))
        if not parts:
            parts = [Plain(text="")]
        fields = self._with_raw(
            common,
            channel_type=kind_of(channel, channel_type),
            thread_ts=thread_ts,
            subtype=message.get("subtype"),
        )
        ts = _ts(message.get("ts"))
        if ts is not None:
            fields["timestamp"] = ts
        return MessageReceived(
            message_id=str(message.get("ts") or ""),
            message_chain=MessageChain(parts),
            sender=user_of(message),
            **self._in_chat(channel, channel_type, thread_ts),
            **fields,
        )

    def _message(
        self, event: dict[str, Any], team: str, event_id: str, common: dict[str, Any]
    ) -> tuple[list[Event], str]:
        subtype = event.get("subtype")
        channel = str(event.get("channel") or "")
        kind = kind_of(channel, event.get("channel_type"))
        by_id = f"ev:{event_id}"
        if subtype in _SAID:
            if self._from_bots(event) or not self._wanted(kind, event):
                return [], by_id
            return [self.message_event(event, event.get("channel_type"), common)], self._message_key(
                team, event
            )
        if subtype == "message_changed":
            new = event.get("message") or {}
            old = event.get("previous_message") or {}
            if self._from_bots(new) or not (self._wanted(kind, new) or self._wanted(kind, old)):
                return [], by_id
            if new.get("text") == old.get("text") and new.get("files") == old.get("files"):
                # an unfurl or a reply count changed, not what was said
                return [self._specific("message_changed", event, common, channel)], by_id
            thread_ts = new.get("thread_ts")
            parts = text_components(str(new.get("text") or ""), self.me.user_id)
            parts.extend(file_component(f) for f in new.get("files") or [] if isinstance(f, dict))
            fields = self._with_raw(common, channel_type=kind, thread_ts=thread_ts)
            ts = _ts(event.get("ts"))
            if ts is not None:
                fields["timestamp"] = ts
            editor = (new.get("edited") or {}).get("user") or new.get("user") or ""
            return [
                MessageEdited(
                    message_id=str(new.get("ts") or ""),
                    new_content=MessageChain(parts or [Plain(text="")]),
                    editor=User(id=str(editor)),
                    **self._in_chat(channel, event.get("channel_type"), thread_ts),
                    **fields,
                )
            ], by_id
        if subtype == "message_deleted":
            old = event.get("previous_message") or {}
            if old and (self._from_bots(old) or not self._wanted(kind, old)):
                return [], by_id
            thread_ts = old.get("thread_ts")
            return [
                MessageDeleted(
                    message_id=str(event.get("deleted_ts") or old.get("ts") or ""),
                    **self._in_chat(channel, event.get("channel_type"), thread_ts),
                    **self._with_raw(common, channel_type=kind, thread_ts=thread_ts),
                )
            ], by_id
        if self._from_bots(event):
            return [], by_id
        return [self._specific(f"message.{subtype}", event, common, channel)], by_id

    def _reaction(self, event: dict[str, Any], common: dict[str, Any]) -> list[Event]:
        item = event.get("item") or {}
        user = str(event.get("user") or "")
        if user == self.me.user_id:
            return []  # our own add_reaction coming back
        channel = item.get("channel")
        if item.get("type") != "message" or not isinstance(channel, str):
            return [self._specific(str(event.get("type")), event, common)]
        ts = _ts(event.get("event_ts"))
        fields = self._with_raw(common, item_user=event.get("item_user"), channel_type=kind_of(channel))
        if ts is not None:
            fields["timestamp"] = ts
        return [
            MessageReaction(
                message_id=str(item.get("ts") or ""),
                user=User(id=user),
                reaction=str(event.get("reaction") or ""),
                is_add=event.get("type") == "reaction_added",
                **self._in_chat(channel, None, None),
                **fields,
            )
        ]

    def _membership(self, event: dict[str, Any], common: dict[str, Any]) -> Event:
        channel = str(event.get("channel") or "")
        group = Group(id=channel, raw={"channel_type": kind_of(channel, event.get("channel_type"))})
        user = str(event.get("user") or "")
        inviter = event.get("inviter")
        inviter_user = User(id=str(inviter)) if inviter else None
        joined = event.get("type") == "member_joined_channel"
        if user == self.me.user_id:
            if joined:
                return BotInvitedToGroup(group=group, inviter=inviter_user, **common)
            return BotRemovedFromGroup(group=group, **common)
        if joined:
            return MemberJoined(
                group=group,
                member=User(id=user),
                inviter=inviter_user,
                join_type="invited" if inviter else "joined",
                **common,
            )
        return MemberLeft(group=group, member=User(id=user), **common)
