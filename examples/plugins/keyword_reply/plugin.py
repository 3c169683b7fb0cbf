"""Keyword auto-reply: a message containing a keyword gets that keyword's answer.

plugins:
  - path: examples/plugins/keyword_reply
    config:
      keywords: {hello: "Hi there!", price: "It is free."}
      count: true
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from callboard.plugin import Context, Plugin, command, on


class Config(BaseModel):
    keywords: dict[str, str] = Field(default_factory=lambda: {"hello": "Hi there!"})
    count: bool = Field(default=False, description="add how many answers this chat has had")
    case_sensitive: bool = False


class KeywordReply(Plugin):
    Config = Config
    config: Config

    async def on_load(self) -> None:
        self.patterns = _patterns(self.config)

    async def on_config(self, config: Config) -> None:
        self.config = config
        self.patterns = _patterns(config)

    @on("message.received", priority=10)
    async def answer(self, ctx: Context) -> None:
        for keyword, pattern in self.patterns:
            if pattern.search(ctx.text):
                reply = self.config.keywords[keyword]
                if self.config.count:
                    state = await ctx.state()
                    state["answers"] = int(state.get("answers", 0)) + 1
                    reply = f"{reply} (answer {state['answers']} in this chat)"
                await ctx.reply(reply)
                ctx.log.info("answered keyword %r in %s", keyword, ctx.chat_id)
                ctx.prevent_default()  # the bot's fallback rule stays quiet
                return

    @command("keywords")
    async def list_keywords(self, ctx: Context) -> None:
        await ctx.reply("keywords: " + ", ".join(sorted(self.config.keywords)))
        ctx.prevent_default()


def _patterns(config: Config) -> list[tuple[str, re.Pattern[str]]]:
    """Whole words only ("hi" is not in "nothing")."""
    flags = 0 if config.case_sensitive else re.IGNORECASE
    return [(k, re.compile(rf"\b{re.escape(k)}\b", flags)) for k in config.keywords]
