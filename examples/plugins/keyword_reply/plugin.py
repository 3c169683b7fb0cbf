"""Keyword auto-reply: a message containing a keyword gets that keyword's answer.

plugins:
  - path: examples/plugins/keyword_reply
    config:
      keywords: {hello: "Hi there!", price: "It is free."}
      count: true
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from callboard.plugin import Context, Plugin, command, on


class Config(BaseModel):
    keywords: dict[str, str] = Field(default_factory=lambda: {"hello": "Hi there!"})
    count: bool = Field(default=False, description="add how many answers this chat has had")
    case_sensitive: bool = False


class KeywordReply(Plugin):
    Config = Config
    config: Config

    @on("message.received", priority=10)
    async def answer(self, ctx: Context) -> None:
        text = ctx.text if self.config.case_sensitive else ctx.text.lower()
        for keyword, reply in self.config.keywords.items():
            if (keyword if self.config.case_sensitive else keyword.lower()) in text:
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
