"""SlackAdapter: the unified platform API on slack_sdk's ``AsyncWebClient``.

Every call goes through ``SlackWeb`` against ``base_url`` (Slack, or a test
server): paced by Slack's method tiers, errors classified into
``SlackAPIError`` (a ``SendError``): permanent for refusals
(``channel_not_found``, ``msg_too_long``...), transient with Slack's
``Retry-After`` for ``ratelimited`` and for 5xx and network failures, so the
outbound path retries exactly what can succeed later.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from callboard.adapters.base import Adapter, AdapterHost, SendProgress, action_params, params_doc
from callboard.adapters.slack.config import SlackAdapterConfig
from callboard.adapters.slack.convert import Converter, Identity, kind_of
from callboard.adapters.slack.errors import SlackAPIError
from callboard.adapters.slack.render import (
    TEXT_LIMIT,
    Permalink,
    Post,
    Rendered,
    RenderError,
    Step,
    Upload,
    escape,
    render,
)
from callboard.adapters.slack.request import SlackWeb
from callboard.engine.actor import Actor
from callboard.engine.entities import ID, Group, GroupMember, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.platform import MessageResult, PlatformAction, RateLimits

_USER_CACHE = 10_000

#: Web API methods a handler may call by name through call_platform_api (beyond the named actions)
WEB_METHODS: dict[str, str] = {
    "chat.getPermalink": "a message's permalink (channel, message_ts)",
    "chat.meMessage": "a /me message (channel, text)",
    "chat.deleteScheduledMessage": "cancel a scheduled message (channel, scheduled_message_id)",
    "chat.scheduledMessages.list": "scheduled messages (channel)",
    "conversations.setTopic": "set a channel's topic (channel, topic)",
    "conversations.setPurpose": "set a channel's description (channel, purpose)",
    "conversations.invite": "invite users (channel, users: comma-separated ids)",
    "conversations.join": "join a public channel (channel)",
    "conversations.open": "open a DM or group DM (users)",
    "conversations.archive": "archive a channel (channel)",
    "conversations.create": "create a channel (name, is_private)",
    "reactions.remove": "remove the bot's reaction (channel, timestamp, name)",
    "reactions.get": "reactions on a message (channel, timestamp)",
    "pins.list": "pinned items (channel)",
    "users.lookupByEmail": "a user by email (email)",
    "users.list": "workspace members (cursor, limit)",
    "users.conversations": "the bot's conversations (types, cursor)",
    "team.info": "the workspace",
    "views.publish": "publish an App Home view (user_id, view)",
    "views.update": "update a view (view_id, view)",
    "views.push": "push a view (trigger_id, view)",
    "bookmarks.add": "add a bookmark (channel_id, title, type, link)",
}


# ---------------------------------------------------------------------- platform action params


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Ephemeral(_Params):
    channel: ID
    user: ID = Field(description="who sees it")
    text: str = Field(min_length=1)
    thread_ts: str | None = None


class _Pin(_Params):
    channel: ID
    timestamp: str = Field(description="the message ts")


class _View(_Params):
    trigger_id: str = Field(description="from an interaction (3 s to use it)")
    view: dict[str, Any] = Field(description="a modal view object")


class _Schedule(_Params):
    channel: ID
    text: str = Field(min_length=1)
    post_at: int = Field(description="unix time, up to 120 days ahead")
    thread_ts: str | None = None


class _Download(_Params):
    file_id: str


_ACTION_PARAMS: dict[str, type[_Params]] = {
    "post_ephemeral": _Ephemeral,
    "pin_message": _Pin,
    "unpin_message": _Pin,
    "auth_test": _Params,
    "open_view": _View,
    "schedule_message": _Schedule,
    "download_file": _Download,
}


class SlackAdapter(Adapter):
    adapter_name: ClassVar[str] = "slack"
    config_type: ClassVar[type[SlackAdapterConfig]] = SlackAdapterConfig
    emits: ClassVar[tuple[str, ...]] = (
        "message.received",
        "message.edited",
        "message.deleted",
        "message.reaction",
        "feedback.received",
        "group.member_joined",
        "group.member_left",
        "group.info_updated",
        "bot.invited_to_group",
        "bot.removed_from_group",
        "platform.specific",
    )
    #: chat.postMessage: about one message a second per channel (bursts tolerated briefly)
    rate_limits = RateLimits(
        per_bot_per_second=0, per_private_chat_per_second=1, per_group_chat_per_minute=60
    )
    max_text_length: ClassVar[int | None] = TEXT_LIMIT
    platform_actions: ClassVar[tuple[PlatformAction, ...]] = (
        PlatformAction(
            action="post_ephemeral",
            description="a message only one user sees",
            params=params_doc(_Ephemeral),
        ),
        PlatformAction(action="pin_message", description="pin a message", params=params_doc(_Pin)),
        PlatformAction(action="unpin_message", description="unpin a message", params=params_doc(_Pin)),
        PlatformAction(action="auth_test", description="who the bot is (auth.test)"),
        PlatformAction(action="open_view", description="open a modal", params=params_doc(_View)),
        PlatformAction(
            action="schedule_message",
            description="post a message later",
            params=params_doc(_Schedule),
        ),
        PlatformAction(
            action="download_file",
            description="a shared file's content (base64), fetched with the bot token",
            params=params_doc(_Download),
        ),
        *(
            PlatformAction(action=method, description=f"Web API {method}: {doc}")
            for method, doc in WEB_METHODS.items()
        ),
    )

    def __init__(self, host: AdapterHost, config: SlackAdapterConfig) -> None:
        super().__init__(host, config)
        self.slack_config = config
        if config.rate_limits is not None:
            self.rate_limits = config.rate_limits  # the Outlet reads the instance's
        self.web = SlackWeb(
            config.bot_token.get_secret_value(),
            config.base_url,
            config.request_timeout,
            host.clock,
            paced=config.tier_limits,
        )
        self._identity: Identity | None = None
        self._converter: Converter | None = None
        self._progress: SendProgress[dict[str, Any]] = SendProgress()
        self._users: OrderedDict[str, tuple[float, User]] = OrderedDict()

    def connection(self) -> tuple[type[Actor], tuple[Any, ...]]:
        if self.slack_config.mode == "socket":
            from callboard.adapters.slack.connection import SocketModeConnection

            return SocketModeConnection, (self,)
        from callboard.adapters.slack.events_api import EventsApiConnection

        return EventsApiConnection, (self,)

    def singleton_connection(self) -> bool:
        return self.slack_config.mode == "socket"

    def links(self) -> dict[str, str]:
        if self.slack_config.mode == "http":
            path = f"/slack/{self.host.bot_id}/events"
            return {"Slack Events API request URL": path, "Slack interactivity request URL": path}
        return {}

    async def close(self) -> None:
        await self.web.close()

    async def identity(self) -> Identity:
        """Who the bot is (auth.test, once)."""
        if self._identity is None:
            data = await self.web.call("auth.test", lambda c: c.auth_test())
            self._identity = Identity(
                user_id=str(data.get("user_id") or ""),
                bot_id=str(data.get("bot_id") or ""),
                team_id=str(data.get("team_id") or ""),
                name=str(data.get("user") or ""),
            )
        return self._identity

    async def converter(self) -> Converter:
        if self._converter is None:
            config = self.slack_config
            self._converter = Converter(
                self.host.bot_id,
                await self.identity(),
                channel_messages=config.channel_messages,
                thread_sessions=config.thread_sessions,
            )
        return self._converter

    # ------------------------------------------------------------------ messages

    async def send_message(
        self,
        chat_type: str,
        chat_id: str,
        message: MessageChain,
        *,
        thread_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        return await self._send(chat_id, render(message), thread_id, idempotency_key)

    async def reply_message(
        self,
        event: MessageReceived,
        message: MessageChain,
        quote_origin: bool = False,
        *,
        idempotency_key: str | None = None,
    ) -> MessageResult:
        """Answer in the message's thread; ``quote_origin`` on a message outside any
        thread starts a thread under it (Slack's way of replying to one message)."""
        thread = event.raw.get("thread_ts") or event.thread_id
        if thread is None and quote_origin:
            thread = event.message_id
        return await self._send(event.chat_id, render(message), thread, idempotency_key)

    async def _send(
        self, channel: str, rendered: Rendered, thread_ts: str | None, key: str | None
    ) -> MessageResult:
        """Run the steps in order. With an idempotency key, the parts already
        posted are remembered until the whole chain is out, so the outbound's
        retry of a half-sent long text posts only the rest."""
        done = self._progress.resume(key)
        steps = rendered.steps
        try:
            for index in range(len(done), len(steps)):
                done.append(await self._step(channel, steps[index], thread_ts))
        except SlackAPIError as exc:
            self._progress.failed(key, done, exc)
            raise
        ids = [str(d["ts"]) for d in done if d.get("ts")]
        files = [f for d in done for f in d.get("files", [])]
        raw: dict[str, Any] = {"channel": channel, "message_ids": ids}
        if files:
            raw["files"] = files
        return MessageResult(message_id=ids[0] if ids else None, raw=raw)

    async def _step(self, channel: str, step: Step, thread_ts: str | None) -> dict[str, Any]:
        if isinstance(step, Post):
            return await self._post(channel, step, thread_ts)
        if isinstance(step, Upload):
            data = await self.web.call(
                "files.completeUploadExternal",
                lambda c: c.files_upload_v2(
                    content=step.data,
                    filename=step.filename,
                    title=step.title or step.filename,
                    channel=channel,
                    thread_ts=thread_ts,
                ),
            )
            return {"files": [str(f.get("id")) for f in data.get("files") or []]}
        assert isinstance(step, Permalink)
        link = await self.web.call(
            "chat.getPermalink", lambda c: c.chat_getPermalink(channel=step.channel, message_ts=step.ts)
        )
        return await self._post(channel, Post(f"<{link['permalink']}>"), thread_ts)

    async def _post(self, channel: str, post: Post, thread_ts: str | None) -> dict[str, Any]:
        return await self.web.call(
            "chat.postMessage",
            lambda c: c.chat_postMessage(
                channel=channel, text=post.text, blocks=post.blocks, thread_ts=thread_ts
            ),
        )

    async def edit_message(
        self, chat_type: str, chat_id: str, message_id: str, new_content: MessageChain
    ) -> None:
        """Replace a message's text and blocks (chat.update): one message, no uploads."""
        steps = render(new_content).steps
        if len(steps) != 1 or not isinstance(steps[0], Post):
            raise RenderError(
                f"a Slack edit takes one message of at most {TEXT_LIMIT} characters and no file uploads"
            )
        post = steps[0]
        await self.web.call(
            "chat.update",
            lambda c: c.chat_update(channel=chat_id, ts=message_id, text=post.text, blocks=post.blocks or []),
        )

    async def delete_message(self, chat_type: str, chat_id: str, message_id: str) -> None:
        await self.web.call("chat.delete", lambda c: c.chat_delete(channel=chat_id, ts=message_id))

    async def forward_message(
        self, from_chat_type: str, from_chat_id: str, message_id: str, to_chat_type: str, to_chat_id: str
    ) -> MessageResult:
        """Post the message's permalink (Slack unfurls it as a shared message)."""
        done = await self._step(to_chat_id, Permalink(from_chat_id, message_id), None)
        return MessageResult(
            message_id=str(done["ts"]), raw={"channel": to_chat_id, "message_ids": [done["ts"]]}
        )

    async def get_message(self, chat_type: str, chat_id: str, message_id: str) -> MessageReceived:
        """A message by channel and ts: from the channel's history, else from its thread."""
        found = await self._find_message(chat_id, message_id)
        converter = await self.converter()
        return converter.message_event({**found, "channel": chat_id}, kind_of(chat_id))

    async def _find_message(self, channel: str, ts: str) -> dict[str, Any]:
        history = await self.web.call(
            "conversations.history",
            lambda c: c.conversations_history(channel=channel, latest=ts, inclusive=True, limit=1),
        )
        for message in history.get("messages") or []:
            if message.get("ts") == ts:
                return dict(message)
        replies = await self.web.call(
            "conversations.replies",
            lambda c: c.conversations_replies(channel=channel, ts=ts, oldest=ts, inclusive=True, limit=2),
        )
        for message in replies.get("messages") or []:
            if message.get("ts") == ts:
                return dict(message)
        raise SlackAPIError("conversations.history", "message_not_found", permanent=True)

    async def add_reaction(self, chat_type: str, chat_id: str, message_id: str, reaction: str) -> None:
        """Add the bot's reaction: an emoji name (``thumbsup``, ``:thumbsup:``)."""
        name = reaction.strip(":")
        await self.web.call(
            "reactions.add", lambda c: c.reactions_add(channel=chat_id, timestamp=message_id, name=name)
        )

    # ------------------------------------------------------------------ groups

    async def get_group_info(self, group_id: str) -> Group:
        data = await self.web.call(
            "conversations.info", lambda c: c.conversations_info(channel=group_id, include_num_members=True)
        )
        return _group(data.get("channel") or {})

    async def get_group_list(self) -> list[Group]:
        """The channels the bot is in (public, private and group DMs)."""
        groups: list[Group] = []
        async for channel in self.web.pages(
            "conversations.list",
            "channels",
            lambda c, cursor: c.conversations_list(
                types="public_channel,private_channel,mpim", exclude_archived=True, limit=200, cursor=cursor
            ),
        ):
            if channel.get("is_member") or channel.get("is_mpim"):
                groups.append(_group(channel))
        return groups

    async def get_group_member_list(self, group_id: str) -> list[GroupMember]:
        """Every member's id (names: get_user_info, cached)."""
        return [
            GroupMember(user=User(id=str(user)), group_id=group_id)
            async for user in self.web.pages(
                "conversations.members",
                "members",
                lambda c, cursor: c.conversations_members(channel=group_id, limit=200, cursor=cursor),
            )
        ]

    async def set_group_name(self, group_id: str, name: str) -> None:
        await self.web.call(
            "conversations.rename", lambda c: c.conversations_rename(channel=group_id, name=name)
        )

    async def kick_member(self, group_id: str, user_id: str) -> None:
        await self.web.call(
            "conversations.kick", lambda c: c.conversations_kick(channel=group_id, user=user_id)
        )

    async def leave_group(self, group_id: str) -> None:
        await self.web.call("conversations.leave", lambda c: c.conversations_leave(channel=group_id))

    # ------------------------------------------------------------------ users and files

    async def get_user_info(self, user_id: str) -> User:
        """users.info, answered from a cache for ``user_cache_ttl``."""
        now = self.host.clock.now()
        cached = self._users.get(user_id)
        if cached is not None and now - cached[0] < self.slack_config.user_cache_ttl:
            return cached[1]
        data = await self.web.call("users.info", lambda c: c.users_info(user=user_id))
        user = _user(data.get("user") or {})
        self._users[user_id] = (now, user)
        self._users.move_to_end(user_id)
        while len(self._users) > _USER_CACHE:
            self._users.popitem(last=False)
        return user

    async def upload_file(self, file_data: bytes, filename: str) -> str:
        """Upload without sharing; the file id (share it with an Image/File of ``data``)."""
        data = await self.web.call(
            "files.completeUploadExternal",
            lambda c: c.files_upload_v2(content=file_data, filename=filename, title=filename),
        )
        files = data.get("files") or []
        if not files:
            raise SlackAPIError("files.completeUploadExternal", "no_file_returned", permanent=True)
        return str(files[0].get("id"))

    async def get_file_url(self, file_id: str) -> str:
        """The file's private download URL. Fetching it needs the bot token
        (``Authorization: Bearer``), which this URL does not carry; the
        ``download_file`` action fetches the content with it."""
        data = await self.web.call("files.info", lambda c: c.files_info(file=file_id))
        file = data.get("file") or {}
        url = file.get("url_private_download") or file.get("url_private")
        if not isinstance(url, str):
            raise SlackAPIError("files.info", "file_has_no_url", permanent=True)
        return url

    async def download_file(self, file_id: str) -> tuple[bytes, dict[str, Any]]:
        """The content of a file and its files.info record, fetched with the bot token."""
        data = await self.web.call("files.info", lambda c: c.files_info(file=file_id))
        file = data.get("file") or {}
        url = file.get("url_private_download") or file.get("url_private")
        if not isinstance(url, str):
            raise SlackAPIError("files.info", "file_has_no_url", permanent=True)
        headers = {"Authorization": f"Bearer {self.web.token}"}
        try:
            async with self.web.session.get(url, headers=headers) as response:
                if response.status != 200:
                    raise SlackAPIError(
                        "file download", f"http_{response.status}", permanent=response.status < 500
                    )
                return await response.read(), file
        except (OSError, TimeoutError) as exc:
            raise SlackAPIError(
                "file download", "network", permanent=False, detail=type(exc).__name__
            ) from None

    # ------------------------------------------------------------------ platform actions

    async def platform_action(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        if action in WEB_METHODS:
            return await self.web.api(action, **params)
        p: Any = action_params("slack", action, _ACTION_PARAMS[action], params)
        if action == "post_ephemeral":
            return await self.web.call(
                "chat.postEphemeral",
                lambda c: c.chat_postEphemeral(
                    channel=p.channel, user=p.user, text=escape(p.text), thread_ts=p.thread_ts
                ),
            )
        if action == "pin_message":
            return await self.web.call(
                "pins.add", lambda c: c.pins_add(channel=p.channel, timestamp=p.timestamp)
            )
        if action == "unpin_message":
            return await self.web.call(
                "pins.remove", lambda c: c.pins_remove(channel=p.channel, timestamp=p.timestamp)
            )
        if action == "auth_test":
            return await self.web.call("auth.test", lambda c: c.auth_test())
        if action == "open_view":
            return await self.web.call(
                "views.open", lambda c: c.views_open(trigger_id=p.trigger_id, view=p.view)
            )
        if action == "schedule_message":
            return await self.web.call(
                "chat.scheduleMessage",
                lambda c: c.chat_scheduleMessage(
                    channel=p.channel, text=escape(p.text), post_at=p.post_at, thread_ts=p.thread_ts
                ),
            )
        content, file = await self.download_file(p.file_id)
        return {
            "name": file.get("name"),
            "mimetype": file.get("mimetype"),
            "size": len(content),
            "content_base64": base64.b64encode(content).decode(),
        }


def _group(channel: dict[str, Any]) -> Group:
    extra: dict[str, Any] = {
        "channel_type": "mpim"
        if channel.get("is_mpim")
        else ("group" if channel.get("is_private") else "channel")
    }
    for key in ("is_archived", "is_general", "is_shared"):
        if channel.get(key):
            extra[key] = True
    topic = (channel.get("topic") or {}).get("value")
    if topic:
        extra["topic"] = topic
    return Group(
        id=str(channel.get("id") or ""),
        name=str(channel.get("name") or ""),
        description=(channel.get("purpose") or {}).get("value") or None,
        member_count=channel.get("num_members"),
        owner_id=channel.get("creator") or None,
        raw=extra,
    )


def _user(data: dict[str, Any]) -> User:
    profile = data.get("profile") or {}
    extra: dict[str, Any] = {k: data[k] for k in ("tz", "team_id", "deleted", "is_admin") if k in data}
    if profile.get("real_name"):
        extra["real_name"] = profile["real_name"]
    return User(
        id=str(data.get("id") or ""),
        nickname=profile.get("display_name") or profile.get("real_name") or data.get("real_name") or "",
        username=data.get("name") or None,
        avatar_url=profile.get("image_192") or profile.get("image_72") or None,
        is_bot=bool(data.get("is_bot")),
        raw=extra,
    )
