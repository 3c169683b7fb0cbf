"""SessionActor: one chat session; its events are handled one at a time, in order.

Message events are debounced through ``DebounceWindow`` children (one per
sender in group chats, one per private chat); any other event first flushes
the open windows, so order is kept. A handler run has a deadline (kept by one
``RunDeadline`` watchdog timer per session, not a timeout context per run); a failing
run is logged with its event ids and counted, and the session carries on.
After ``crash_loop_after`` failed runs in a row the session raises, and its
supervisor restarts it with backoff; the fresh instance reloads its
unfinished events from the journal, so nothing a window held is lost.

A run goes to every rule that matches (``continue: true``) in order, with one
``HandlerContext`` whose ``api`` is a ``RunAPI`` over the bot's outbound path.
While a run is in progress, what the first handler's ``busy`` policy says
happens to new input: ``queue`` (the run is awaited inline, so the mailbox
waits: each burst is its own next run), ``collect`` and ``interrupt`` (the run
goes on in a task owned by this actor, new input is held in ``backlog``;
``collect`` makes everything held one next run, ``interrupt`` cancels the run
and starts one with its input plus the new). Either way one run at a time.
A run that fails with ``RunFailed`` is recorded as a failed run (receipt
``failed:bot:run:rule``), listed by the admin API and retryable.

A storage failure is not a handler failure: when the journal could not write
during a run (disk full, I/O error), the run is not recorded at all; its
events stay pending, the session waits until the journal writes again and
runs them once more as a replay (receipts skip what was already sent).

A run's done mark shares a transaction with the replies it stored (the web chat's
outbox), and the session does not wait for that commit: it takes its next event at
once, so one commit carries many runs. Runs whose commit is still open are kept
(``unsettled``); if it fails, neither their replies nor their marks were stored, and
they run again, in order, before this session sends anything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from functools import partial
from typing import Any

from callboard.actors.deadline import RunDeadline
from callboard.actors.debounce import DebounceWindow
from callboard.actors.handler_api import RunAPI
from callboard.actors.messages import (
    Add,
    Callback,
    CommitLost,
    Due,
    Inbound,
    ReplayRun,
    RetryRun,
    RunEnded,
    TakeAll,
    group_replay,
)
from callboard.actors.runtime import BotRuntime, Fenced
from callboard.engine.actor import Actor
from callboard.engine.events import MessageReceived, SessionKey
from callboard.engine.journal import StorageUnavailable
from callboard.engine.logcontext import bound
from callboard.handlers.base import Handler
from callboard.handlers.context import HandlerContext, RunFailed

log = logging.getLogger("callboard.session")

#: seqs a session remembers having taken (a replay below its newest is checked against them)
TAKEN_KEPT = 256


class HandlerCrashLoop(RuntimeError):
    """Too many failed runs in a row: let the supervisor back off."""


def is_command(event: MessageReceived) -> bool:
    return event.text.lstrip().startswith("/")


def has_media(event: MessageReceived) -> bool:
    """Anything beyond text and mentions closes the burst at once (text only is debounced)."""
    return any(c.type not in ("Plain", "At", "AtAll", "Source", "Quote") for c in event.message_chain)


def failure_key(bot_id: str, run_id: int, handler_index: int) -> str:
    """The receipt key a failed run is recorded under (see ``actors.failures``)."""
    return f"failed:{bot_id}:{run_id}:{handler_index}"


class _Pending:
    """Input held while a background run is in progress."""

    __slots__ = ("inbounds", "only", "replayed", "run_id")

    def __init__(self, inbounds: list[Inbound], run_id: int | None, replayed: bool, only: int | None) -> None:
        self.inbounds = inbounds
        self.run_id = run_id
        self.replayed = replayed
        self.only = only

    @property
    def mergeable(self) -> bool:
        """Fresh input may join others in one run; a replayed or retried run keeps its identity."""
        return self.run_id is None and not self.replayed and self.only is None


class _Unsettled:
    """A finished run whose done mark (with its stored replies) has not committed yet."""

    __slots__ = ("committed", "inbounds", "matches", "run_id")

    def __init__(
        self,
        committed: asyncio.Future[None],
        inbounds: list[Inbound],
        run_id: int,
        matches: list[tuple[int, Handler]],
    ) -> None:
        self.committed = committed
        self.inbounds = inbounds
        self.run_id = run_id
        self.matches = matches


def _failed(future: asyncio.Future[None]) -> bool:
    return future.cancelled() or future.exception() is not None


class _Window:
    __slots__ = ("generation", "ref")

    def __init__(self, ref: Any, generation: int) -> None:
        self.ref = ref
        self.generation = generation


class SessionActor(Actor):
    mailbox_capacity = None

    def __init__(self, key: SessionKey, bot: BotRuntime) -> None:
        self.key = key
        #: ``key.name``, built once: every run's log fields and receipts carry it
        self.name = key.name
        self.bot = bot
        self.windows: dict[str, _Window] = {}
        self.generation = 0
        self.last_seq = 0
        #: the latest seqs taken, so an event replayed from the journal below
        #: ``last_seq`` is still taken once (see ``_fresh``)
        self.taken: deque[int] = deque(maxlen=TAKEN_KEPT)
        self.failures = 0
        debounce = bot.config.session.debounce
        self.debounce = debounce if debounce.window > 0 else None
        self.active: asyncio.Task[bool] | None = None
        self.active_input: _Pending | None = None
        self.active_policy = "queue"
        self.run_generation = 0
        self.interrupted: list[Inbound] = []
        self.backlog: list[_Pending] = []
        self.inline = False  # stopping: every run is awaited where it starts
        #: finished runs whose done marks have not committed yet, oldest first
        self.unsettled: deque[_Unsettled] = deque()
        self.deadline = RunDeadline(bot.clock)

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
        self.deadline.close()
        self.bot.live_sessions -= 1

    async def on_stopping(self) -> None:
        # shutdown and passivation lose no burst: finish the run, then what it held, then the windows
        self.inline = True
        if self.active is not None:
            await asyncio.gather(self.active, return_exceptions=True)
            self._run_ended()
        await self._drain_backlog()
        await self._flush_windows()
        while self.unsettled:  # every run's mark committed, or its run made again
            await asyncio.wait([run.committed for run in self.unsettled])
            if self._lost():
                await self._rerun_lost()

    async def on_receive_timeout(self) -> None:
        if not self.windows and self.active is None and not self.backlog:
            self.context.stop(reason="idle")

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Inbound | ReplayRun):
            await self._accept(message)
        elif isinstance(message, RetryRun):
            await self._run(
                message.inbounds, run_id=message.run_id, replayed=True, only=message.handler_index
            )
        elif isinstance(message, Callback):
            await self._callback(message)
        elif isinstance(message, RunEnded):
            if self.active is not None and message.generation == self.run_generation and self.active.done():
                failed = self._run_ended()
                await self._drain_backlog()
                await self._recover()
                self._check_crash_loop(failed)
        elif isinstance(message, CommitLost):
            await self._recover()
        elif isinstance(message, Due):
            window = self.windows.get(message.window)
            if window is not None and window.generation == message.generation:
                del self.windows[message.window]
                burst = await window.ref.ask(TakeAll())
                await self._run(burst)
        else:
            raise TypeError(f"unexpected message {message!r}")

    def _fresh(self, item: Inbound) -> bool:
        """Whether ``item`` is new to this session; marks it taken. A live delivery at or
        below ``last_seq`` was already taken from the journal after a restart. A replay
        from the journal (pending there, not in flight on this node) may be below it: in
        cluster mode, an event committed on a node that could not publish it is handed
        on by the sweep after later events of its chat (docs/scale-out.md)."""
        if item.seq <= self.last_seq and (not item.replayed or item.seq in self.taken):
            return False
        self.taken.append(item.seq)
        self.last_seq = max(self.last_seq, item.seq)
        return True

    async def _accept(self, item: Inbound | ReplayRun) -> None:
        if isinstance(item, ReplayRun):
            inbounds = [i for i in item.inbounds if self._fresh(i)]
            if not inbounds:
                return
            await self._flush_windows()
            await self._run(inbounds, run_id=item.run_id, replayed=True)
            return
        if not self._fresh(item):
            return
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
        elif self.windows:  # (no coroutine for the common case: no debounce, nothing open)
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

    async def _run(
        self,
        inbounds: list[Inbound],
        run_id: int | None = None,
        replayed: bool = False,
        only: int | None = None,
    ) -> None:
        if self.active is not None:
            pending = _Pending(inbounds, run_id, replayed, only)
            self.backlog.append(pending)
            if self.active_policy == "interrupt" and pending.mergeable and not self.active.done():
                self.active.cancel()  # its input joins the next run
            return
        if self.unsettled and self._lost():
            await self._rerun_lost()
        bot = self.bot
        events = [i.event for i in inbounds]
        seqs = [i.seq for i in inbounds]
        if only is not None:
            handler = bot.routes.at(only)
            matches = [(only, handler)] if handler is not None else []
        else:
            matches = bot.routes.match_all(events[-1])
        if not matches:
            bot.counters.unrouted += len(events)
            await self._mark_unrouted(seqs)
            bot.in_flight.done(seqs)
            return
        run_id = run_id if run_id is not None else max(seqs)
        if len(seqs) > 1 and not replayed:
            # A burst is remembered before it can send; a lone event is its own run on replay anyway.
            bot.journal.record_run(run_id, seqs)
        policy = matches[0][1].busy
        execution = self._execute_stored(inbounds, run_id, replayed, matches, retry=only is not None)
        if policy == "queue" or self.inline:
            self._check_crash_loop(not await execution)
            return
        self.run_generation += 1
        generation = self.run_generation
        self.active_policy = policy
        self.active_input = _Pending(inbounds, run_id, replayed, only)
        self.active = asyncio.ensure_future(execution)
        self.active.add_done_callback(lambda _: self.ref.tell(RunEnded(generation)))

    async def _mark_unrouted(self, seqs: list[int]) -> None:
        """A done mark that may share a transaction with others' stored output: again
        once the journal writes, if that transaction failed."""
        journal = self.bot.journal
        while True:
            committed = journal.mark_done(seqs, "unrouted")
            if committed is None:
                return
            try:
                await committed
                return
            except StorageUnavailable:
                await journal.wait_writable()

    def _run_ended(self) -> bool:
        """Settle the background run; True when it failed."""
        task, self.active = self.active, None
        assert task is not None
        if task.cancelled():
            assert self.active_input is not None
            self.interrupted.extend(self.active_input.inbounds)  # run again with what came since
            return False
        error = task.exception()
        if error is not None:  # not a handler's failure (those are caught in the run): the engine's
            log.error("%s: a background run failed", self.key, exc_info=error)
            return True
        return not task.result()

    async def _drain_backlog(self) -> None:
        """Start what arrived during the run: kept runs alone, fresh input merged
        (collect, interrupt) into runs of consecutive messages."""
        carried, self.interrupted = self.interrupted, []
        held, self.backlog = self.backlog, []
        if self.active_policy == "queue":
            for item in held:
                await self._run(item.inbounds, item.run_id, item.replayed, item.only)
            return
        fresh: list[Inbound] = list(carried)
        for item in held:
            if item.mergeable:
                fresh.extend(item.inbounds)
            else:
                await self._run(item.inbounds, item.run_id, item.replayed, item.only)
        group: list[Inbound] = []
        for inbound in sorted(fresh, key=lambda i: i.seq):
            if isinstance(inbound.event, MessageReceived):
                group.append(inbound)
                continue
            if group:
                await self._run(group)
                group = []
            await self._run([inbound])
        if group:
            await self._run(group)

    def _check_crash_loop(self, failed: bool) -> None:
        if not failed:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.bot.config.session.crash_loop_after:
            self.failures = 0
            raise HandlerCrashLoop(
                f"{self.key}: {self.bot.config.session.crash_loop_after} failed runs in a row"
            )

    def _context(self, events: list[Any], run_id: int, api: RunAPI) -> HandlerContext:
        bot = self.bot
        return HandlerContext(
            bot_id=bot.bot_id,
            session=self.key,
            events=events,
            run_id=run_id,
            api=api,
            clock=bot.clock,
            load_state=self._load_state,
            save_state=self._save_state,
            stats=bot.stats,
            replayed=api.replayed,
            count=bot.counters.count_usage,
        )

    async def _execute_stored(
        self,
        inbounds: list[Inbound],
        run_id: int,
        replayed: bool,
        matches: list[tuple[int, Handler]],
        retry: bool = False,
    ) -> bool:
        """``_execute`` until a run of it was stored: one that met a storage failure
        records nothing and runs again, as a replay, once the journal writes."""
        fields = bound(
            bot=self.bot.bot_id,
            session=self.name,
            run=run_id,
            events=[inbound.event.event_id for inbound in inbounds],
        )
        with fields:
            while True:
                try:
                    return await self._execute(inbounds, run_id, replayed, matches, retry=retry)
                except Fenced as exc:
                    log.warning(
                        "%s: run %d stopped: %s; its events stay pending for the owner", self.key, run_id, exc
                    )
                    return False
                except StorageUnavailable as exc:
                    log.warning(
                        "%s: run %d met a storage failure (%s); its events stay pending and run again "
                        "once the journal can write",
                        self.key,
                        run_id,
                        exc,
                    )
                await self.bot.journal.wait_writable()
                if self.unsettled and self._lost():  # earlier runs' replies first
                    await self._rerun_lost()
                replayed = True

    async def _execute(
        self,
        inbounds: list[Inbound],
        run_id: int,
        replayed: bool,
        matches: list[tuple[int, Handler]],
        retry: bool = False,
    ) -> bool:
        """Run the matched handlers in order; True when every one succeeded."""
        bot = self.bot
        counters = bot.counters
        events = [i.event for i in inbounds]
        seqs = [i.seq for i in inbounds]
        api = RunAPI(bot, self.key, run_id, replayed, self._lost)
        ctx = self._context(events, run_id, api)
        sandbox = bot.sandbox
        user_id = _user_id(events) if sandbox is not None else ""
        status = "done"
        storage_errors = bot.journal.storage_errors
        for index, handler in matches:
            ctx.handler_index = index
            api.scope = str(index)
            if sandbox is not None:
                key = self.key
                ctx.sandbox = sandbox(key.chat_type, key.chat_id, key.thread, user_id, handler.kind)
            outcome = await self._handle(ctx, handler, run_id, events)
            if bot.cluster is not None and not bot.cluster.owns(self.key):  # fenced: write nothing
                raise Fenced(f"lost the lease of {self.name}'s partition during the run")
            if bot.journal.storage_errors != storage_errors or api.held_back:  # not its fault
                raise StorageUnavailable(f"the journal failed during the {handler.kind} handler")
            if outcome is not None:
                status = "timeout" if outcome.startswith("missed") and status == "done" else "failed"
                self._record(run_id, index, "failed", outcome)
            elif ctx.errors:
                errors = "; ".join(ctx.errors)[:2000]
                self._record(run_id, index, "errors", errors)
                log.warning("%s: run %d finished with errors: %s", self.key, run_id, errors)
            elif retry:
                self._record(run_id, index, "retried")
            ctx.errors = []
            if ctx.default_prevented:  # a plugin listener kept its fallback rules from running
                break
        if ctx.state_loaded is not None:
            await bot.journal.save_state(bot.bot_id, self.key, ctx.state_loaded)
        if not retry:
            if bot.journal.storage_errors != storage_errors:
                raise StorageUnavailable("the journal failed before the run's done mark")
            committed = bot.journal.mark_done(seqs, status)
            if committed is None:
                bot.in_flight.done(seqs)
            else:  # one transaction with the run's stored replies: not waited for
                self.unsettled.append(_Unsettled(committed, inbounds, run_id, matches))
                committed.add_done_callback(partial(self._settled, seqs))
            counters.handled_events += len(events)
        counters.runs += 1
        return status == "done"

    def _settled(self, seqs: list[int], committed: asyncio.Future[None]) -> None:
        """A pipelined done mark's commit ended (a loop callback: only tells the actor)."""
        if _failed(committed):
            self.ref.tell(CommitLost())
        else:
            self.bot.in_flight.done(seqs)

    def _lost(self) -> bool:
        """Whether a run's done mark did not commit (nothing may be sent before that run
        is made again); forgets the runs whose marks committed."""
        unsettled = self.unsettled
        while unsettled:
            committed = unsettled[0].committed
            if not committed.done():
                return False
            if _failed(committed):
                return True
            unsettled.popleft()
        return False

    async def _recover(self) -> None:
        if self.active is None and self.unsettled and self._lost():
            await self._rerun_lost()

    async def _rerun_lost(self) -> None:
        """Run again, in order and as replays, the runs whose done marks did not commit
        (nor did their replies: one transaction), once the journal writes. A commit that
        failed for another reason than the storage crashes the session: its supervisor
        restarts it, and the fresh instance replays what the journal holds unfinished."""
        runs, self.unsettled = list(self.unsettled), deque()
        await asyncio.wait([run.committed for run in runs])
        lost = [run for run in runs if _failed(run.committed)]
        for run in lost:
            error = None if run.committed.cancelled() else run.committed.exception()
            if error is not None and not isinstance(error, StorageUnavailable):
                raise error
        log.warning("%s: %d runs' replies were not stored; running them again", self.key, len(lost))
        await self.bot.journal.wait_writable()
        for run in lost:
            self.bot.counters.handled_events -= len(run.inbounds)
            await self._execute_stored(run.inbounds, run.run_id, True, run.matches)

    def _record(self, run_id: int, handler_index: int, status: str, error: str | None = None) -> None:
        """A rule's run that did not simply succeed, as a receipt (see ``actors.failures``)."""
        bot = self.bot
        key = failure_key(bot.bot_id, run_id, handler_index)
        bot.journal.store_receipt(key, bot.bot_id, run_id, self.name, None, status=status, error=error)

    async def _handle(
        self, ctx: HandlerContext, handler: Handler, run_id: int, events: list[Any]
    ) -> str | None:
        """One handler's part of the run; the reason when it failed, else None."""
        bot = self.bot
        counters = bot.counters
        timeout = bot.config.session.handler_timeout
        deadline = self.deadline
        deadline.begin(timeout)
        try:
            try:
                await handler.handle(ctx)
            finally:
                expired = deadline.end()
        except StorageUnavailable:  # not the handler's failure: the run is made again
            raise
        except asyncio.CancelledError:
            if not expired:
                raise
            counters.timed_out_runs += 1
            log.error(
                "%s: handler run %d missed its %.1fs deadline (events %s)",
                self.key,
                run_id,
                timeout,
                _event_ids(events),
            )
            return f"missed its {timeout:g}s deadline"
        except RunFailed as exc:
            counters.failed_runs += 1
            log.error(
                "%s: %s handler run %d failed: %s (events %s)",
                self.key,
                handler.kind,
                run_id,
                exc,
                _event_ids(events),
            )
            return str(exc)
        except Exception as exc:
            counters.failed_runs += 1
            log.exception("%s: handler run %d failed (events %s)", self.key, run_id, _event_ids(events))
            return f"{type(exc).__name__} in the {handler.kind} handler"
        return None

    async def _callback(self, message: Callback) -> None:
        """Run an async webhook receiver's actions in this session, as part of the delivery's run."""
        handler = self.bot.routes.at(message.handler_index)
        run_actions = getattr(handler, "run_actions", None)
        if run_actions is None:
            log.warning("%s: callback for rule %d, which is not a webhook", self.key, message.handler_index)
            return
        api = RunAPI(self.bot, self.key, message.run_id, True, self._lost)
        api.scope = f"cb{message.handler_index}"  # the callback's sends never collide with the run's
        ctx = self._context(message.events, message.run_id, api)
        ctx.handler_index = message.handler_index
        await run_actions(ctx, message.actions)
        if ctx.errors:
            self._record(message.run_id, message.handler_index, "errors", "; ".join(ctx.errors)[:2000])

    async def _load_state(self) -> dict[str, Any]:
        return await self.bot.journal.load_state(self.bot.bot_id, self.key) or {}

    async def _save_state(self, state: dict[str, Any]) -> None:
        await self.bot.journal.save_state(self.bot.bot_id, self.key, state)


def _event_ids(events: list[Any]) -> list[str]:
    """For a failed run's log line (built only then: runs rarely fail)."""
    return [event.event_id for event in events]


def _user_id(events: list[Any]) -> str:
    for event in reversed(events):
        user = event.actor()
        if user is not None:
            return str(user.id)
    return ""
