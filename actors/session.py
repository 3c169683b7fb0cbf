"""SessionActor: one chat session; its events are handled one at a time, in order.

Message events are debounced through ``DebounceWindow`` children (one per
sender in group chats, one per private chat); any other event first flushes
the open windows, so order is kept. A handler run has a deadline; a failing
run is logged with its event ids and counted, and the session carries on.
After ``crash_loop_after`` failed runs in a row the session raises, and its
supervisor restarts it with backoff; the fresh instance reloads its
unfinished events from the journal, so nothing a window held is lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from callboard.actors.debounce import DebounceWindow
from callboard.actors.messages import Add, Due, Inbound, ReplayRun, SendRequest, TakeAll, group_replay
from callboard.actors.runtime import BotRuntime
from callboard.engine.actor import Actor
from callboard.engine.entities import MessageChain
from callboard.engine.events import MessageReceived, SessionKey
from callboard.engine.platform import MessageResult
from callboard.handlers.context import HandlerContext

log = logging.getLogger("callboard.session")


class HandlerCrashLoop(RuntimeError):
    """Too many failed runs in a row: let the supervisor back off."""


def is_command(event: MessageReceived) -> bool:
    return event.text.lstrip().startswith("/")


def has_media(event: MessageReceived) -> bool:
    """Anything beyond text and mentions closes the burst at once (text only is debounced)."""
    return any(c.type not in ("Plain", "At", "AtAll", "Source", "Quote") for c in event.message_chain.root)


class _Window:
    __slots__ = ("generation", "ref")

    def __init__(self, ref: Any, generation: int) -> None:
        self.ref = ref
        self.generation = generation


class SessionActor(Actor):
    mailbox_capacity = None

    def __init__(self, key: SessionKey, bot: BotRuntime) -> None:
        self.key = key
        self.bot = bot
        self.windows: dict[str, _Window] = {}
        self.generation = 0
        self.last_seq = 0
        self.failures = 0
        debounce = bot.config.session.debounce
        self.debounce = debounce if debounce.window > 0 else None

    async def on_start(self) -> None:
        self.context.set_receive_timeout(self.bot.config.session.idle_ttl)
        self.bot.live_sessions += 1

    async def on_restart(self, error: BaseException) -> None:
        await self.on_start()
        # Events the failed instance had buffered are still unfinished in the journal.
        pending = await self.bot.journal.pending_for_session(self.bot.bot_id, self.key)
        log.info("%s: restarted; replaying %d unfinished events", self.key, len(pending))
        for item in group_replay(pending):
            await self._accept(item)

    async def on_stop(self) -> None:
        self.bot.live_sessions -= 1

    async def on_stopping(self) -> None:
        await self._flush_windows()  # shutdown and passivation lose no burst

    async def on_receive_timeout(self) -> None:
        if not self.windows:
            self.context.stop(reason="idle")

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Inbound | ReplayRun):
            await self._accept(message)
        elif isinstance(message, Due):
            window = self.windows.get(message.window)
            if window is not None and window.generation == message.generation:
                del self.windows[message.window]
                burst = await window.ref.ask(TakeAll())
                await self._run(burst)
        else:
            raise TypeError(f"unexpected message {message!r}")

    async def _accept(self, item: Inbound | ReplayRun) -> None:
        if isinstance(item, ReplayRun):
            inbounds = [i for i in item.inbounds if i.seq > self.last_seq]
            if not inbounds:
                return
            self.last_seq = max(i.seq for i in inbounds)
            await self._flush_windows()
            await self._run(inbounds, run_id=item.run_id, replayed=True)
            return
        if item.seq <= self.last_seq:
            return  # already taken from the journal after a restart
        self.last_seq = item.seq
        event = item.event
        if item.replayed:
            await self._flush_windows()
            await self._run([item], replayed=True)
            return
        if self.debounce is not None and isinstance(event, MessageReceived):
            name = self._window_name(event)
            if not is_command(event):
                self._add_to_window(name, item, event)
                return
            await self._flush_window(name)  # the sender's pending text first, then the command alone
        else:
            await self._flush_windows()
        await self._run([item])

    def _window_name(self, event: MessageReceived) -> str:
        """One window per sender in group chats, one per private chat."""
        return f"w:{event.sender.id}" if self.key.chat_type == "group" else "w"

    def _add_to_window(self, name: str, inbound: Inbound, event: MessageReceived) -> None:
        assert self.debounce is not None
        window = self.windows.get(name)
        if window is None:
            self.generation += 1
            ref = self.context.spawn(
                DebounceWindow,
                f"{name.replace('/', '%2F')}#{self.generation}",
                self.ref,
                name,
                self.generation,
                self.debounce.window,
                self.debounce.max_wait,
                self.debounce.max_batch,
            )
            window = self.windows[name] = _Window(ref, self.generation)
        window.ref.tell(Add(inbound, has_media(event)))

    async def _flush_window(self, name: str) -> None:
        window = self.windows.pop(name, None)
        if window is not None:
            burst = await window.ref.ask(TakeAll())
            if burst:
                await self._run(burst)

    async def _flush_windows(self) -> None:
        while self.windows:
            await self._flush_window(next(iter(self.windows)))

    # ------------------------------------------------------------------ one handler run

    async def _run(self, inbounds: list[Inbound], run_id: int | None = None, replayed: bool = False) -> None:
        bot = self.bot
        counters = bot.counters
        events = [i.event for i in inbounds]
        seqs = [i.seq for i in inbounds]
        run_id = run_id if run_id is not None else max(seqs)
        handler = bot.router.match(events[-1])
        if handler is None:
            counters.unrouted += len(events)
            bot.journal.mark_done(seqs, "unrouted")
            return
        if len(seqs) > 1 and not replayed:
            # A burst is remembered before it can send; a lone event is its own run on replay anyway.
            bot.journal.record_run(run_id, seqs)
        ctx = HandlerContext(
            bot_id=bot.bot_id,
            session=self.key,
            events=events,
            run_id=run_id,
            api=bot.api,
            send=self._sender(run_id, replayed),
            load_state=self._load_state,
            stats=bot.stats,
            sandbox=bot.sandbox(self.key.chat_type, self.key.chat_id, self.key.thread, _user_id(events)),
            replayed=replayed,
        )
        status = "done"
        try:
            async with asyncio.timeout(bot.config.session.handler_timeout):
                await handler.handle(ctx)
        except TimeoutError:
            status = "timeout"
            counters.timed_out_runs += 1
            log.error(
                "%s: handler run %d missed its %.1fs deadline (events %s)",
                self.key,
                run_id,
                bot.config.session.handler_timeout,
                [e.event_id for e in events],
            )
        except Exception:
            status = "failed"
            counters.failed_runs += 1
            log.exception(
                "%s: handler run %d failed (events %s)", self.key, run_id, [e.event_id for e in events]
            )
        if ctx.state_loaded is not None:
            await bot.journal.save_state(bot.bot_id, self.key, ctx.state_loaded)
        bot.journal.mark_done(seqs, status)
        counters.runs += 1
        counters.handled_events += len(events)
        if status == "done":
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= bot.config.session.crash_loop_after:
            self.failures = 0
            raise HandlerCrashLoop(f"{self.key}: {bot.config.session.crash_loop_after} failed runs in a row")

    def _sender(self, run_id: int, replayed: bool) -> Any:
        bot = self.bot
        index = 0

        async def send(
            chat_type: str,
            chat_id: str,
            thread_id: str | None,
            chain: MessageChain,
            reply_to: MessageReceived | None,
        ) -> MessageResult:
            nonlocal index
            index += 1
            request = SendRequest(
                chat_type=chat_type,
                chat_id=chat_id,
                chain=chain,
                reply_to=reply_to,
                thread_id=thread_id,
                receipt_key=f"{bot.bot_id}:{run_id}:{index}",
                run_id=run_id,
                check_receipt=replayed,
            )
            if chat_type == self.key.chat_type and chat_id == self.key.chat_id:
                return await bot.outlet.deliver(request)  # our own chat: inline, already in order
            request.future = asyncio.get_running_loop().create_future()
            bot.outbound.tell(request)  # another chat: that chat's lane keeps its order
            return await request.future

        return send

    async def _load_state(self) -> dict[str, Any]:
        return await self.bot.journal.load_state(self.bot.bot_id, self.key) or {}


def _user_id(events: list[Any]) -> str:
    for event in reversed(events):
        user = event.actor()
        if user is not None:
            return str(user.id)
    return ""
