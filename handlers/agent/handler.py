"""The agent handler: a model (or agent service) answers the run, with memory,
tools and a streamed reply.

One run: build the system prompt and the user turn (the burst's text, or the
event described), call the runner, run the tools it asks for and call it
again, up to ``tools.max_rounds``; stream the text into the chat; keep the
exchange in memory. Transient runner failures are retried with backoff
within ``deadline``; a final failure tells the user ``failure_message``
(never an error text or a key) and fails the run.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

from callboard.engine.clock import sleep
from callboard.engine.supervision import Backoff
from callboard.handlers.agent import prompt
from callboard.handlers.agent.config import AgentConfig
from callboard.handlers.agent.memory import Memory
from callboard.handlers.agent.runner import Completion, Runner, RunnerError, RunRequest, Usage
from callboard.handlers.agent.runners import RUNNERS
from callboard.handlers.agent.stream import ReplyStream
from callboard.handlers.agent.tools import Toolbox
from callboard.handlers.context import HandlerContext, RunFailed

if TYPE_CHECKING:
    from callboard.handlers.agent.mcp import McpPool

SUMMARY_PROMPT = (
    "Summarise the conversation below in at most 120 words for your own later reference: "
    "keep names, facts, decisions and open questions."
)

#: between retries of a transient runner failure (429, 5xx, timeouts)
RETRY_BACKOFF = Backoff(min=0.5, max=8.0, factor=2.0, jitter=0.2)


class AgentHandler:
    kind: ClassVar[str] = "agent"

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.busy = config.busy
        #: the fields this rule's templates use, and the burst's text (the user turn)
        self.fields = prompt.placeholders(config.prompt) | prompt.placeholders(config.event_prompt) | {"text"}
        self.runner: Runner = RUNNERS[config.runner](config.runner_config)
        #: MCP client sessions kept across runs (created on first use: needs callboard[mcp])
        self.mcp: McpPool | None = None

    async def close(self) -> None:
        await self.runner.close()
        if self.mcp is not None:
            await self.mcp.close()

    async def handle(self, ctx: HandlerContext) -> None:
        config = self.config
        if ctx.session.chat_type not in ("private", "group"):
            ctx.log.info("agent: event %s has no chat to answer in; skipped", ctx.event.event_id)
            return
        memory = Memory(await ctx.state(), config.memory)
        messages = ctx.messages
        if messages and messages[-1].text.strip() == config.reset_command:
            memory.reset()
            await ctx.reply("Memory cleared.")
            return
        values = prompt.fields(ctx.bot_id, ctx.session, ctx.events, self.fields)
        user_turn = values["text"] if messages else prompt.render(config.event_prompt, values)
        reply = ReplyStream(ctx, stream=config.stream, interval=config.stream_interval)
        started = ctx.clock.now()
        ctx.count("agent_runs", 1)
        errors: list[str] = []
        try:
            async with asyncio.timeout(config.deadline):
                system = prompt.render(config.prompt, values)
                answer = await self._converse(ctx, memory, system, user_turn, reply, errors)
        except (RunnerError, TimeoutError) as exc:
            ctx.count("agent_failures", 1)
            memory.abandon()
            if isinstance(exc, TimeoutError):
                last = f" (last error: {errors[-1]})" if errors else ""
                reason = f"missed its {config.deadline:g}s deadline{last}"
            else:
                reason = str(exc)
            await reply.finish(config.failure_message)
            raise RunFailed(f"agent run failed: {reason}") from None
        except asyncio.CancelledError:
            await reply.stopped()  # interrupted by new messages (busy: interrupt), or shut down
            raise
        finally:
            await reply.close()  # no edit of this run lands after it (an interrupted run's either)
            ctx.count("agent_seconds", ctx.clock.now() - started)
        dropped = memory.finish(user_turn, answer)
        if dropped and config.memory.summarize:
            await self._summarize(ctx, memory, dropped)

    async def _summarize(self, ctx: HandlerContext, memory: Memory, dropped: list[dict[str, Any]]) -> None:
        """Fold dropped turns into the memory's summary; the answer is already out,
        so a failure here only loses those turns (and is logged)."""
        transcript = "\n".join(f"{turn['role']}: {turn.get('content') or ''}" for turn in dropped)
        earlier = f"Summary so far: {memory.summary}\n\n" if memory.summary else ""
        request = RunRequest(
            messages=[
                {"role": "system", "content": SUMMARY_PROMPT},
                {"role": "user", "content": f"{earlier}Conversation:\n{transcript}"},
            ],
            tools=[],
            stream=False,
            user=f"{ctx.bot_id}:summary",
        )
        try:
            async with asyncio.timeout(self.config.deadline):
                completion = await self.runner.complete(request, _ignore_delta)
        except (RunnerError, TimeoutError) as exc:
            ctx.log.warning("agent: could not summarise %d dropped turns: %s", len(dropped), exc)
            return
        _count_usage(ctx, completion.usage)
        memory.summary = completion.text.strip()[:4000]

    async def _converse(
        self,
        ctx: HandlerContext,
        memory: Memory,
        system: str,
        user_turn: str,
        reply: ReplyStream,
        errors: list[str],
    ) -> str:
        config = self.config
        run = memory.run_record(ctx.run_id)
        ctx.api.resume_after(int(run.get("calls") or 0))  # what the recorded rounds sent stays sent
        reply.resume(run.get("message_id"))
        toolbox = Toolbox(ctx, config.tools)
        if config.tools.mcp:
            from callboard.handlers.agent.mcp import McpPool, McpTools

            if self.mcp is None:
                self.mcp = McpPool()
            await McpTools(ctx, config.tools.mcp, toolbox, self.mcp).add()
        return await self._tool_loop(ctx, memory, system, user_turn, reply, errors, toolbox, run)

    async def _tool_loop(
        self,
        ctx: HandlerContext,
        memory: Memory,
        system: str,
        user_turn: str,
        reply: ReplyStream,
        errors: list[str],
        toolbox: Toolbox,
        run: dict[str, Any],
    ) -> str:
        config = self.config
        record: list[dict[str, Any]] = run["messages"]
        if memory.summary:
            system = f"{system}\n\nSummary of the earlier conversation: {memory.summary}"
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            *memory.turns,
            {"role": "user", "content": user_turn},
            *record,
        ]
        request = RunRequest(
            messages=messages,
            tools=toolbox.specs,
            stream=config.stream,
            user=f"{ctx.bot_id}:{ctx.session.chat_type}:{ctx.session.chat_id}",
            conversation=memory.conversation,
        )
        rounds = sum(1 for m in record if m["role"] == "assistant")
        while True:
            completion = await self._complete(ctx, request, reply, errors)
            if not completion.tool_calls or rounds >= config.tools.max_rounds:
                text = completion.text.strip() or (
                    f"(stopped after {rounds} tool rounds)" if completion.tool_calls else "(no answer)"
                )
                await reply.finish(text)
                return text
            rounds += 1
            step: list[dict[str, Any]] = [
                {
                    "role": "assistant",
                    "content": completion.text or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in completion.tool_calls
                    ],
                }
            ]
            for call in completion.tool_calls:
                ctx.count("agent_tool_calls", 1)
                result = await toolbox.run(call.name, call.arguments)
                step.append({"role": "tool", "tool_call_id": call.id, "content": result})
            record.extend(step)
            messages.extend(step)
            run["calls"] = ctx.api.calls_made
            run["message_id"] = reply.message_id
            await ctx.checkpoint()  # a replay after a crash resumes here, without running them again
            reply.reset()

    async def _complete(
        self, ctx: HandlerContext, request: RunRequest, reply: ReplyStream, errors: list[str]
    ) -> Completion:
        """One model call; transient failures retried with backoff (the run's deadline bounds them)."""
        attempt = 0
        while True:
            try:
                completion = await self.runner.complete(request, reply.delta)
            except RunnerError as exc:
                errors.append(str(exc))
                if not exc.transient:
                    raise
                delay = exc.retry_after if exc.retry_after is not None else RETRY_BACKOFF.delay(attempt)
                attempt += 1
                ctx.count("agent_retries", 1)
                ctx.log.warning("agent: %s; retry %d in %.2fs", exc, attempt, delay)
                reply.reset()
                await sleep(ctx.clock, delay)
                continue
            _count_usage(ctx, completion.usage)
            return completion


async def _ignore_delta(piece: str) -> None:
    return None


def _count_usage(ctx: HandlerContext, usage: Usage) -> None:
    ctx.count("agent_prompt_tokens", usage.prompt_tokens)
    ctx.count("agent_completion_tokens", usage.completion_tokens)
