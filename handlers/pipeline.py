"""The pipeline handler: an ordered list of stages, each of which may answer
and may stop the run.

Stages: ``command`` (slash commands: /help, /stats, /echo, /run), ``echo``
(one reply with every message text of the burst, joined by newlines),
``reply`` (a fixed or templated text) and ``agent`` (the agent handler's
runner, prompt, memory and tools as a stage; the pipeline stops after it).
"""

from __future__ import annotations

import enum
import string
from typing import Annotated, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from callboard.handlers.agent.config import AgentConfig
from callboard.handlers.agent.handler import AgentHandler
from callboard.handlers.context import HandlerContext


class Flow(enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"


class Stage(Protocol):
    async def run(self, ctx: HandlerContext) -> Flow: ...


# ---------------------------------------------------------------------- stage configs


class CommandStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["command"]
    prefix: str = Field(default="/", min_length=1, max_length=3)
    enabled: list[str] = Field(
        default_factory=lambda: ["help", "stats", "echo", "run"], description="commands to offer"
    )
    run_output_limit: int = Field(default=3000, ge=100, description="characters of /run output shown")


class EchoStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["echo"]
    prefix: str = Field(default="", description="text put before the echoed texts")


class ReplyStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["reply"]
    text: str = Field(
        description="fixed text; {text}, {user}, {chat_id}, {count} (events in this run) and {turn} "
        "(runs of this session so far, kept across passivation and restarts) are filled in"
    )
    quote: bool = False

    @field_validator("text")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        allowed = {"text", "user", "chat_id", "count", "turn"}
        try:
            fields = [field for _, field, _, _ in string.Formatter().parse(value)]
        except ValueError as exc:
            raise ValueError(f"invalid template: {exc}") from None
        for field in fields:
            if field is not None and field not in allowed:
                raise ValueError(f"unknown placeholder {{{field}}}; use {sorted(allowed)}")
        return value


class AgentStageConfig(AgentConfig):
    """The agent handler's settings (docs/agent.md); ``busy`` is the pipeline's (queue)."""

    type: Literal["agent"]


StageConfig = Annotated[
    CommandStageConfig | EchoStageConfig | ReplyStageConfig | AgentStageConfig, Field(discriminator="type")
]


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handler_type: Literal["pipeline"] = Field(default="pipeline", exclude=True)
    stages: list[StageConfig] = Field(min_length=1)


# ---------------------------------------------------------------------- stages


class CommandStage:
    """Answers the burst's last message when it is a known slash command."""

    HELP = {
        "help": "list the commands",
        "stats": "live sessions, actors and journal figures",
        "echo": "/echo TEXT: say TEXT back",
        "run": "/run CODE: run Python in this chat's sandbox",
    }

    def __init__(self, config: CommandStageConfig) -> None:
        self.prefix = config.prefix
        self.enabled = [c for c in config.enabled if c in self.HELP]
        self.limit = config.run_output_limit

    async def run(self, ctx: HandlerContext) -> Flow:
        messages = ctx.messages
        if not messages or not messages[-1].text.startswith(self.prefix):
            return Flow.CONTINUE
        body = messages[-1].text[len(self.prefix) :]
        name, _, argument = body.partition(" ")
        name = name.split("@", 1)[0].lower()  # "/help@MyBot" in group chats
        if name not in self.enabled:
            await ctx.reply(f"unknown command {self.prefix}{name}; try {self.prefix}help")
            return Flow.STOP
        await getattr(self, f"_{name}")(ctx, argument.strip())
        return Flow.STOP

    async def _help(self, ctx: HandlerContext, argument: str) -> None:
        lines = [f"{self.prefix}{name}: {self.HELP[name]}" for name in self.enabled]
        await ctx.reply("\n".join(lines))

    async def _stats(self, ctx: HandlerContext, argument: str) -> None:
        stats = ctx.stats()
        await ctx.reply("\n".join(f"{key}: {value}" for key, value in stats.items()))

    async def _echo(self, ctx: HandlerContext, argument: str) -> None:
        await ctx.reply(argument or "(nothing to echo)")

    async def _run(self, ctx: HandlerContext, argument: str) -> None:
        if ctx.sandbox is None:
            await ctx.reply("the sandbox is off for this bot (no container engine configured)")
            return
        if not argument:
            await ctx.reply(f"usage: {self.prefix}run CODE")
            return
        from callboard.engine.sandbox_api import ExecArgs, SandboxError

        try:
            result = await ctx.sandbox.exec(ExecArgs(argv=["python3", "-c", argument]))
        except SandboxError as exc:
            await ctx.reply(f"sandbox error: {exc}")
            return
        output = (result.stdout + result.stderr).strip() or "(no output)"
        if len(output) > self.limit:
            output = output[: self.limit] + "\n[... truncated]"
        notes = []
        if result.truncated:
            notes.append("output truncated")
        if result.timed_out:
            notes.append("timed out")
        if result.exit_code not in (0, None):
            notes.append(f"exit code {result.exit_code}")
        await ctx.reply(output + (f"\n[{', '.join(notes)}]" if notes else ""))


class EchoStage:
    def __init__(self, config: EchoStageConfig) -> None:
        self.prefix = config.prefix

    async def run(self, ctx: HandlerContext) -> Flow:
        texts = ctx.texts
        if texts:
            await ctx.reply(self.prefix + "\n".join(texts))
        return Flow.CONTINUE


class ReplyStage:
    def __init__(self, config: ReplyStageConfig) -> None:
        self.template = config.text
        self.quote = config.quote
        self.counts_turns = "{turn}" in config.text

    async def run(self, ctx: HandlerContext) -> Flow:
        user = ctx.event.actor()
        turn = ""
        if self.counts_turns:
            state = await ctx.state()
            state["turns"] = int(state.get("turns", 0)) + 1
            turn = str(state["turns"])
        values = {
            "turn": turn,
            "text": "\n".join(ctx.texts),
            "user": (user.nickname or user.id) if user else "",
            "chat_id": ctx.session.chat_id,
            "count": str(len(ctx.events)),
        }
        await ctx.reply(self.template.format_map(values), quote=self.quote)
        return Flow.CONTINUE


class AgentStage:
    """An agent answers; nothing after it runs."""

    def __init__(self, config: AgentStageConfig) -> None:
        self.agent = AgentHandler(config)

    async def run(self, ctx: HandlerContext) -> Flow:
        await self.agent.handle(ctx)
        return Flow.STOP

    async def close(self) -> None:
        await self.agent.close()


def build_stage(config: StageConfig) -> Stage:
    if isinstance(config, AgentStageConfig):
        return AgentStage(config)
    if isinstance(config, CommandStageConfig):
        return CommandStage(config)
    if isinstance(config, EchoStageConfig):
        return EchoStage(config)
    return ReplyStage(config)


class PipelineHandler:
    kind: ClassVar[str] = "pipeline"
    busy: ClassVar[str] = "queue"

    def __init__(self, config: PipelineConfig) -> None:
        self.stages = [build_stage(stage) for stage in config.stages]

    async def close(self) -> None:
        for stage in self.stages:
            if isinstance(stage, AgentStage):
                await stage.close()

    async def handle(self, ctx: HandlerContext) -> None:
        for stage in self.stages:
            if await stage.run(ctx) is Flow.STOP:
                return
