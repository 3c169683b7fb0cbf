"""Lark event payloads -> engine events.

``Converter.convert`` takes one decoded delivery (schema 2.0, or 1.0 for the
app ticket) and returns its events. Messages become ``message.received`` with
the content as a chain: text and post with mentions resolved (``At`` with the
user's open_id, ``AtAll`` for ``@_all``, the bot's own mention marked with
``raw["me"]``), images, files, audio and video as components whose ``file_id``
names the message resource (downloaded on demand, see ``resource_ref``), the
quoted message looked up by ``parent_id``, a merged forward's messages
fetched as ``Forward`` nodes. Reactions carry no chat, so the chat of the
message is looked up (cached). Anything without a neutral form becomes
``platform.specific`` with Lark's event type as its action.

Dedup keys: ``lark:msg:<message_id>`` for messages (a redelivery, with the same
or a new event id, is one message), ``lark:ev:<event_id>`` otherwise.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from callboard.engine.entities import (
    At,
    AtAll,
    ChatType,
    Component,
    Face,
    File,
    Forward,
    Group,
    Image,
    MessageChain,
    Plain,
    PlatformComponent,
    Quote,
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
    MessageReaction,
    MessageReceived,
    PlatformSpecific,
)

log = logging.getLogger("callboard.lark")

ADAPTER = "lark"
#: message_id -> (chat type, chat id) remembered for reactions and lookups
_CHATS_KEPT = 20_000
_FEEDBACK = {"like": 1, "dislike": 2, "cancel": 3}


class Lookups(Protocol):
    """What conversion may ask Lark (the adapter implements it on the open API)."""

    async def message_items(self, message_id: str, tenant_key: str | None) -> list[dict[str, Any]]:
        """GET im/v1/messages/<id>: the message (and a merged forward's messages)."""
        ...

    async def chat_mode(self, chat_id: str, tenant_key: str | None) -> str:
        """The chat's ``chat_mode``: p2p, group or topic."""
        ...

    def app_ticket(self, ticket: str) -> None:
        """A store app's new app ticket (pushed hourly by Lark)."""
        ...


def resource_ref(message_id: str, kind: str, key: str) -> str:
    """A component's ``file_id`` for a message resource: ``<message_id>:<image|file>:<key>``."""
    return f"{message_id}:{kind}:{key}"


def parse_resource_ref(ref: str) -> tuple[str, str, str] | None:
    parts = ref.split(":")
    if len(parts) == 3 and parts[1] in ("image", "file") and all(parts):
        return parts[0], parts[1], parts[2]
    return None


def user_of(ids: dict[str, Any] | None, name: str = "", *, tenant_key: str | None = None) -> User:
    """A user from Lark's ``{open_id, union_id, user_id}``; the open_id is the id."""
    ids = ids or {}
    extra = {k: ids[k] for k in ("union_id", "user_id") if ids.get(k)}
    if tenant_key:
        extra["tenant_key"] = tenant_key
    return User(
        id=str(ids.get("open_id") or ids.get("union_id") or ids.get("user_id") or ""),
        nickname=name,
        raw=extra,
    )


def _content(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"text": str(raw)}
    return value if isinstance(value, dict) else {}


def _mention_id(mention: dict[str, Any]) -> str:
    ident = mention.get("id")
    if isinstance(ident, dict):
        return str(ident.get("open_id") or ident.get("union_id") or ident.get("user_id") or "")
    return str(ident or "")


class Content:
    """One message's content as components (shared by events and get_message)."""

    def __init__(self, bot_open_id: str | None) -> None:
        self.bot_open_id = bot_open_id

    def at(self, user_id: str, name: str) -> Component:
        if user_id == "all":
            return AtAll()
        if self.bot_open_id and user_id == self.bot_open_id:
            return At(target=user_id, display=name, raw={"me": True})
        return At(target=user_id, display=name)

    def text(self, text: str, mentions: list[dict[str, Any]]) -> list[Component]:
        by_key = {m.get("key", ""): m for m in mentions if m.get("key")}
        if not by_key and "@_all" not in text:
            return [Plain(text=text)] if text else []
        keys = sorted({*by_key, "@_all"}, key=len, reverse=True)
        out: list[Component] = []
        for piece in re.split("(" + "|".join(re.escape(k) for k in keys) + ")", text):
            if not piece:
                continue
            if piece == "@_all":
                out.append(AtAll())
            elif piece in by_key:
                mention = by_key[piece]
                out.append(self.at(_mention_id(mention), str(mention.get("name", ""))))
            else:
                out.append(Plain(text=piece))
        return out

    def post(
        self, message_id: str, content: dict[str, Any], mentions: list[dict[str, Any]]
    ) -> list[Component]:
        # received posts are {"title", "content"}; sent ones may be wrapped in a locale
        if "content" not in content:
            content = next((v for v in content.values() if isinstance(v, dict) and "content" in v), {})
        out: list[Component] = []
        title = content.get("title") or ""
        if title:
            out.append(Plain(text=title + "\n"))
        for index, paragraph in enumerate(content.get("content") or []):
            if index:
                out.append(Plain(text="\n"))
            for element in paragraph or []:
                out.extend(self.post_element(message_id, element, mentions))
        return _merge_plain(out)

    def post_element(
        self, message_id: str, element: dict[str, Any], mentions: list[dict[str, Any]]
    ) -> list[Component]:
        tag = element.get("tag")
        if tag == "text":
            return [Plain(text=str(element.get("text", "")))]
        if tag == "a":
            return [
                Plain(
                    text=str(element.get("text") or element.get("href", "")), raw={"url": element.get("href")}
                )
            ]
        if tag == "at":
            user_id = str(element.get("user_id", ""))
            if user_id.startswith("@_"):  # received posts name the mention by key
                return self.text(user_id, mentions)
            return [self.at(user_id, str(element.get("user_name", "")))]
        if tag == "img":
            return [Image(file_id=resource_ref(message_id, "image", str(element.get("image_key"))))]
        if tag == "media":
            return [
                File(file_id=resource_ref(message_id, "file", str(element.get("file_key"))), mime="video/mp4")
            ]
        if tag == "emotion":
            return [Face(face_id=str(element.get("emoji_type", "")), name=element.get("emoji_type"))]
        if tag == "code_block":
            return [Plain(text=str(element.get("text", "")), raw={"code": element.get("language")})]
        if tag == "hr":
            return [Plain(text="\n")]
        return [PlatformComponent(platform=ADAPTER, component_type=f"post.{tag}", data=element)]

    def components(
        self, message_id: str, message_type: str, raw_content: Any, mentions: list[dict[str, Any]]
    ) -> list[Component]:
        content = _content(raw_content)
        if message_type == "text":
            return self.text(str(content.get("text", "")), mentions)
        if message_type == "post":
            return self.post(message_id, content, mentions)
        if message_type == "image":
            return [Image(file_id=resource_ref(message_id, "image", str(content.get("image_key"))))]
        if message_type == "file":
            return [
                File(
                    name=str(content.get("file_name", "")),
                    file_id=resource_ref(message_id, "file", str(content.get("file_key"))),
                )
            ]
        if message_type == "audio":
            duration = content.get("duration")
            return [
                Voice(
                    file_id=resource_ref(message_id, "file", str(content.get("file_key"))),
                    duration=duration / 1000 if isinstance(duration, int | float) else None,
                    mime="audio/opus",
                )
            ]
        if message_type == "media":
            return [
                File(
                    name=str(content.get("file_name", "")),
                    file_id=resource_ref(message_id, "file", str(content.get("file_key"))),
                    mime="video/mp4",
                    raw={"image_key": content.get("image_key"), "duration": content.get("duration")},
                )
            ]
        if message_type == "sticker":
            return [Face(face_id=str(content.get("file_key", "")), name="sticker")]
        if message_type == "interactive":
            return [PlatformComponent(platform=ADAPTER, component_type="card", data=content)]
        return [PlatformComponent(platform=ADAPTER, component_type=message_type, data=content)]

    def item(self, item: dict[str, Any]) -> list[Component]:
        """Components of a message as GET im/v1/messages returns it."""
        body = item.get("body") or {}
        return self.components(
            str(item.get("message_id", "")),
            str(item.get("msg_type", "")),
            body.get("content", "{}"),
            list(item.get("mentions") or []),
        )


def _merge_plain(parts: list[Component]) -> list[Component]:
    out: list[Component] = []
    for part in parts:
        if type(part) is Plain and out and type(out[-1]) is Plain and not part.raw and not out[-1].raw:
            out[-1] = Plain(text=out[-1].text + part.text)
        else:
            out.append(part)
    return out


class Converter:
    def __init__(self, bot_id: str, lookups: Lookups) -> None:
        self.bot_id = bot_id
        self.lookups = lookups
        self.content = Content(None)
        self.chats: OrderedDict[str, tuple[ChatType, str]] = OrderedDict()
        #: chat id -> tenant key (store apps answer each chat with its tenant's token)
        self.tenants: dict[str, str] = {}
        self.last_tenant: str | None = None
        #: thread id -> its root message, so a send into a thread can reply in it
        self.threads: OrderedDict[str, str] = OrderedDict()

    def set_bot(self, open_id: str) -> None:
        self.content = Content(open_id)

    def remember(self, message_id: str, chat_type: ChatType, chat_id: str) -> None:
        self.chats[message_id] = (chat_type, chat_id)
        if len(self.chats) > _CHATS_KEPT:
            self.chats.popitem(last=False)

    async def convert(self, payload: dict[str, Any]) -> list[Event]:
        header = payload.get("header")
        if not isinstance(header, dict):  # schema 1.0: only the app ticket is still sent this way
            event = payload.get("event") or {}
            kind = str(event.get("type") or payload.get("type") or "unknown")
            if kind == "app_ticket" and event.get("app_ticket"):
                self.lookups.app_ticket(str(event["app_ticket"]))
            return [
                PlatformSpecific(
                    bot_id=self.bot_id,
                    adapter=ADAPTER,
                    action=kind,
                    data=event,
                    dedup_key=f"lark:v1:{payload.get('uuid')}" if payload.get("uuid") else None,
                )
            ]
        kind = str(header.get("event_type", "unknown"))
        event = payload.get("event") or {}
        common: dict[str, Any] = {
            "bot_id": self.bot_id,
            "adapter": ADAPTER,
            "dedup_key": f"lark:ev:{header.get('event_id')}",
            "raw": {"event_id": header.get("event_id"), "tenant_key": header.get("tenant_key")},
        }
        created = header.get("create_time")
        if created:
            common["timestamp"] = int(created) / 1000
        tenant = header.get("tenant_key")
        if tenant:
            self.last_tenant = str(tenant)
        handler = getattr(self, "_" + kind.replace(".", "_"), None)
        if handler is None:
            return [PlatformSpecific(action=kind, data=event, **common)]
        events: list[Event] = await handler(event, common, tenant)
        return events

    # ------------------------------------------------------------------ messages

    async def _im_message_receive_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        message = event.get("message") or {}
        sender = event.get("sender") or {}
        message_id = str(message.get("message_id", ""))
        chat_id = str(message.get("chat_id", ""))
        chat_type = ChatType.PRIVATE if message.get("chat_type") == "p2p" else ChatType.GROUP
        self.remember(message_id, chat_type, chat_id)
        if tenant:
            self.tenants[chat_id] = tenant
        message_type = str(message.get("message_type", "text"))
        mentions = list(message.get("mentions") or [])
        parts: list[Component] = []
        parent = message.get("parent_id")
        if parent:
            parts.append(await self._quote(str(parent), tenant))
        if message_type == "merge_forward":
            parts.append(await self._forward(message_id, tenant))
        else:
            parts.extend(self.content.components(message_id, message_type, message.get("content"), mentions))
        thread = message.get("thread_id") or None
        if thread:
            self.threads[str(thread)] = str(message.get("root_id") or message_id)
            if len(self.threads) > _CHATS_KEPT:
                self.threads.popitem(last=False)
        raw = dict(common["raw"], message_type=message_type, chat_type=message.get("chat_type"))
        for key in ("root_id", "parent_id", "thread_id"):
            if message.get(key):
                raw[key] = message[key]
        if any(isinstance(p, At) and p.raw.get("me") for p in parts):
            raw["mentions_bot"] = True
        common = dict(common, dedup_key=f"lark:msg:{message_id}", raw=raw)
        if message.get("create_time"):
            common["timestamp"] = int(message["create_time"]) / 1000
        return [
            MessageReceived(
                chat_type=chat_type,
                chat_id=chat_id,
                thread_id=str(thread) if thread else None,
                group=Group(id=chat_id) if chat_type == ChatType.GROUP else None,
                message_id=message_id,
                message_chain=MessageChain(parts),
                sender=user_of(
                    sender.get("sender_id"),
                    tenant_key=sender.get("tenant_key"),
                ),
                **common,
            )
        ]

    async def _quote(self, parent_id: str, tenant: str | None) -> Component:
        try:
            items = await self.lookups.message_items(parent_id, tenant)
        except Exception as exc:  # the event still counts; the quote just has no content
            log.warning("%s: could not look up quoted message %s: %s", self.bot_id, parent_id, exc)
            return Quote(message_id=parent_id)
        if not items:
            return Quote(message_id=parent_id)
        item = items[0]
        sender = item.get("sender") or {}
        return Quote(
            message_id=parent_id,
            sender_id=str(sender.get("id")) if sender.get("id") else None,
            origin=self.content.item(item),
        )

    async def _forward(self, message_id: str, tenant: str | None) -> Component:
        try:
            items = await self.lookups.message_items(message_id, tenant)
        except Exception as exc:
            log.warning("%s: could not fetch merged forward %s: %s", self.bot_id, message_id, exc)
            return Forward(from_message_id=message_id)
        nodes = [self.content.item(item) for item in items if item.get("upper_message_id") == message_id]
        return Forward(from_message_id=message_id, nodes=nodes)

    async def _chat_of(self, message_id: str, tenant: str | None) -> tuple[ChatType, str] | None:
        known = self.chats.get(message_id)
        if known is not None:
            return known
        try:
            items = await self.lookups.message_items(message_id, tenant)
            chat_id = str(items[0]["chat_id"]) if items else ""
            if not chat_id:
                return None
            mode = await self.lookups.chat_mode(chat_id, tenant)
        except Exception as exc:
            log.warning("%s: could not find the chat of message %s: %s", self.bot_id, message_id, exc)
            return None
        found = (ChatType.PRIVATE if mode == "p2p" else ChatType.GROUP, chat_id)
        self.remember(message_id, *found)
        return found

    async def _im_message_recalled_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        message_id = str(event.get("message_id", ""))
        chat_id = str(event.get("chat_id", ""))
        known = self.chats.get(message_id)
        if known is not None:
            chat_type = known[0]
        else:
            try:
                mode = await self.lookups.chat_mode(chat_id, tenant)
            except Exception:
                mode = "group"
            chat_type = ChatType.PRIVATE if mode == "p2p" else ChatType.GROUP
        return [
            MessageDeleted(
                chat_type=chat_type,
                chat_id=chat_id,
                group=Group(id=chat_id) if chat_type == ChatType.GROUP else None,
                message_id=message_id,
                **dict(common, raw=dict(common["raw"], recall_type=event.get("recall_type"))),
            )
        ]

    async def _reaction(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None, is_add: bool
    ) -> list[Event]:
        message_id = str(event.get("message_id", ""))
        reaction = str((event.get("reaction_type") or {}).get("emoji_type", ""))
        operator_type = event.get("operator_type", "user")
        user = (
            User(id=str(event.get("app_id", "")), is_bot=True)
            if operator_type == "app"
            else user_of(event.get("user_id"))
        )
        chat = await self._chat_of(message_id, tenant)
        if chat is None:  # no chat to put it in: keep it, but outside any chat session
            kind = "im.message.reaction." + ("created_v1" if is_add else "deleted_v1")
            return [PlatformSpecific(action=kind, data=event, **common)]
        chat_type, chat_id = chat
        return [
            MessageReaction(
                chat_type=chat_type,
                chat_id=chat_id,
                group=Group(id=chat_id) if chat_type == ChatType.GROUP else None,
                message_id=message_id,
                user=user,
                reaction=reaction,
                is_add=is_add,
                **common,
            )
        ]

    async def _im_message_reaction_created_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        return await self._reaction(event, common, tenant, True)

    async def _im_message_reaction_deleted_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        return await self._reaction(event, common, tenant, False)

    # ------------------------------------------------------------------ groups

    @staticmethod
    def _group(event: dict[str, Any]) -> Group:
        return Group(id=str(event.get("chat_id", "")), name=str(event.get("name") or ""))

    async def _im_chat_member_user_added_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        group = self._group(event)
        inviter = user_of(event.get("operator_id")) if event.get("operator_id") else None
        out: list[Event] = []
        for index, person in enumerate(event.get("users") or []):
            key = common["dedup_key"] + (f":{index}" if index else "")
            out.append(
                MemberJoined(
                    group=group,
                    member=user_of(
                        person.get("user_id"),
                        str(person.get("name", "")),
                        tenant_key=person.get("tenant_key"),
                    ),
                    inviter=inviter,
                    join_type="invite" if inviter is not None else None,
                    **dict(common, dedup_key=key),
                )
            )
        return out

    async def _im_chat_member_user_deleted_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        group = self._group(event)
        operator = user_of(event.get("operator_id")) if event.get("operator_id") else None
        out: list[Event] = []
        for index, person in enumerate(event.get("users") or []):
            member = user_of(person.get("user_id"), str(person.get("name", "")))
            key = common["dedup_key"] + (f":{index}" if index else "")
            out.append(
                MemberLeft(
                    group=group,
                    member=member,
                    operator=operator,
                    is_kicked=operator is not None and operator.id != member.id,
                    **dict(common, dedup_key=key),
                )
            )
        return out

    async def _im_chat_member_bot_added_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        group = self._group(event)
        if tenant:
            self.tenants[group.id] = tenant
        inviter = user_of(event.get("operator_id")) if event.get("operator_id") else None
        return [BotInvitedToGroup(group=group, inviter=inviter, **common)]

    async def _im_chat_member_bot_deleted_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        operator = user_of(event.get("operator_id")) if event.get("operator_id") else None
        return [BotRemovedFromGroup(group=self._group(event), operator=operator, **common)]

    async def _im_chat_updated_v1(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        after = event.get("after_change") or {}
        group = Group(
            id=str(event.get("chat_id", "")),
            name=str(after.get("name") or ""),
            description=after.get("description"),
            owner_id=_mention_id({"id": after["owner_id"]}) if after.get("owner_id") else None,
        )
        operator = user_of(event.get("operator_id")) if event.get("operator_id") else None
        raw = dict(common["raw"], before_change=event.get("before_change") or {}, after_change=after)
        return [
            GroupInfoUpdated(
                group=group, operator=operator, changed_fields=sorted(after), **dict(common, raw=raw)
            )
        ]

    # ------------------------------------------------------------------ cards

    async def _card_action_trigger(
        self, event: dict[str, Any], common: dict[str, Any], tenant: str | None
    ) -> list[Event]:
        action = event.get("action") or {}
        value: dict[str, Any] = action["value"] if isinstance(action.get("value"), dict) else {}
        context = event.get("context") or {}
        operator = event.get("operator") or {}
        chat_id = context.get("open_chat_id")
        message_id = context.get("open_message_id")
        chat_type: ChatType | None = None
        if message_id and message_id in self.chats:
            chat_type = self.chats[message_id][0]
        elif chat_id:
            try:
                mode = await self.lookups.chat_mode(str(chat_id), tenant)
            except Exception:
                mode = "group"
            chat_type = ChatType.PRIVATE if mode == "p2p" else ChatType.GROUP
        kind = value.get("feedback_type", value.get("feedback"))
        feedback_type = _FEEDBACK.get(kind, kind) if isinstance(kind, str) else kind
        raw = dict(common["raw"], action=action, token=event.get("token"))
        return [
            FeedbackReceived(
                feedback_id=str(event.get("token") or common["raw"]["event_id"]),
                feedback_type=int(feedback_type) if isinstance(feedback_type, int) else 0,
                feedback_content=str(value.get("content")) if value.get("content") is not None else None,
                user_id=str(operator.get("open_id")) if operator.get("open_id") else None,
                chat_type=chat_type,
                chat_id=str(chat_id) if chat_id else None,
                message_id=str(message_id) if message_id else None,
                stream_id=str(value["stream_id"]) if value.get("stream_id") else None,
                **dict(common, raw=raw),
            )
        ]
