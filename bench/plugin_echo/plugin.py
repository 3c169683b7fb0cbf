"""The benchmark's plugin: one listener that echoes the message, like the pipeline's echo stage."""

from callboard.plugin import Context, Plugin, on


class BenchEcho(Plugin):
    @on("message.received")
    async def echo(self, ctx: Context) -> None:
        await ctx.reply(ctx.text)
