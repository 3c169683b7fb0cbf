"""Welcome: a message in the group when someone joins it.

plugins:
  - path: examples/plugins/welcome
    config: {template: "Welcome {member} to {group}! We are {count} now."}
"""

from __future__ import annotations

import string

from pydantic import BaseModel, Field, field_validator

from callboard.engine.events import MemberJoined
from callboard.plugin import Context, Plugin, on

PLACEHOLDERS = {"member", "group", "count"}


class Config(BaseModel):
    template: str = Field(default="Welcome {member} to {group}!")
    greet_bots: bool = False

    @field_validator("template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        used = {name for _, name, _, _ in string.Formatter().parse(value) if name}
        unknown = used - PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholders {sorted(unknown)}; use {sorted(PLACEHOLDERS)}")
        return value


class Welcome(Plugin):
    Config = Config
    config: Config

    @on("group.member_joined")
    async def greet(self, ctx: Context) -> None:
        event = ctx.event
        assert isinstance(event, MemberJoined)
        if event.member.is_bot and not self.config.greet_bots:
            return
        count = ""
        if "{count}" in self.config.template:
            info = await ctx.api.get_group_info(event.group.id)
            count = str(info.member_count or "")
        text = self.config.template.format(
            member=event.member.nickname or event.member.id,
            group=event.group.name or event.group.id,
            count=count,
        )
        await ctx.reply(text)
