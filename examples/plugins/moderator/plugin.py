"""Moderator: a group message containing a banned word is deleted; the sender is
warned, and muted once they reach ``mute_after`` strikes (kept per group, in
the session's state, so a restart forgets nothing).

    plugins:
      - path: examples/plugins/moderator
        config: {banned: [spam, scam], mute_after: 3, mute_seconds: 600}
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from callboard.engine.events import MessageReceived
from callboard.plugin import Context, Plugin, on


class Config(BaseModel):
    banned: list[str] = Field(min_length=1)
    mute_after: int = Field(default=3, ge=1, description="strikes before a mute")
    mute_seconds: int = Field(default=600, ge=1)


class Moderator(Plugin):
    Config = Config
    config: Config

    async def on_load(self) -> None:
        self.pattern = _pattern(self.config.banned)

    async def on_config(self, config: Config) -> None:
        self.config = config
        self.pattern = _pattern(config.banned)

    @on("message.received", priority=100)  # before any other plugin sees the message
    async def check(self, ctx: Context) -> None:
        event = ctx.event
        if not isinstance(event, MessageReceived) or event.chat_type != "group":
            return
        if not self.pattern.search(event.text):
            return
        ctx.prevent_postorder()  # nobody answers a message that is being removed
        ctx.prevent_default()
        await ctx.api.delete_message(event.chat_type, event.chat_id, event.message_id)
        state = await ctx.state()
        strikes = state.setdefault("strikes", {})
        count = strikes[event.sender.id] = int(strikes.get(event.sender.id, 0)) + 1
        name = event.sender.nickname or event.sender.id
        if count < self.config.mute_after:
            await ctx.reply(
                f"{name}: message removed (banned word); strike {count} of {self.config.mute_after}"
            )
            return
        strikes[event.sender.id] = 0
        try:
            await ctx.api.mute_member(event.chat_id, event.sender.id, self.config.mute_seconds)
        except Exception as exc:  # a platform without muting says so
            ctx.log.warning("could not mute %s: %s", event.sender.id, exc)
            await ctx.reply(f"{name}: message removed; muting is not available here ({exc})")
            return
        await ctx.reply(f"{name} is muted for {self.config.mute_seconds}s")


def _pattern(words: list[str]) -> re.Pattern[str]:
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
