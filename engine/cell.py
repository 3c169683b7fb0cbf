"""ActorCell: the runtime side of one actor (internal to the engine).

Actors never see their cell: they reach the runtime through the narrow
``ActorContext`` (engine/context.py), which delegates here.

An idle actor owns no task: its cell holds the actor instance and, only while
messages are queued, a mailbox. A tell to an idle actor puts the cell on the
dispatcher's run queue, where a worker task gives it a turn. Everything that
happens to an actor (start, messages, restart, stop) happens inside such a
turn, so one actor is never run by two workers at once. Requests from outside
(a sibling's restart, a child's escalation, a kill) are recorded as a pending
*action*; if the actor is mid-turn its worker is interrupted and the cell
absorbs the cancellation, then performs the action.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from callboard.engine import actor as actor_module
from callboard.engine.errors import (
    ActorDeadError,
    InvalidNameError,
    MailboxFull,
    NameTakenError,
    RestartLimitExceeded,
    SystemShutDownError,
)
from callboard.engine.logcontext import LOG_FIELDS
from callboard.engine.ref import ActorRef
from callboard.engine.signals import RECEIVE_TIMEOUT, Ask, ExitReason, ReceiveTimeout, Terminated, TimerFired
from callboard.engine.supervision import DEFAULT_STRATEGY, Directive, RestartStats, SupervisorStrategy

if TYPE_CHECKING:
    from callboard.engine.actor import Actor, MailboxPolicy
    from callboard.engine.clock import TimerHandle
    from callboard.engine.context import ActorContext
    from callboard.engine.system import ActorSystem

log = logging.getLogger("callboard.engine")

_SPECIAL = frozenset({Ask, TimerFired, ReceiveTimeout})

# Pending actions, by precedence: a later request replaces a pending one only if
# it ranks higher.
_RESTART = 1  # payload: (error, delay)
_FAIL = 2  # payload: error escalated by a child
_TERMINATE = 3  # payload: exit reason


class _Timer:
    __slots__ = ("generation", "handle")

    def __init__(self, generation: int, handle: TimerHandle) -> None:
        self.generation = generation
        self.handle = handle


class _UniqueKey:
    __slots__ = ()


class _Escalated:
    """Stands in for the failed message when a child escalates."""

    __slots__ = ("child",)

    def __init__(self, child: str) -> None:
        self.child = child

    def __repr__(self) -> str:
        return f"failure escalated by {self.child}"


def short_repr(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ActorCell:
    """Runtime state of one actor: mailbox, turns, supervision, timers, stopping."""

    __slots__ = (
        "action",
        "actor",
        "args",
        "backoff_handle",
        "cancel_requested",
        "capacity",
        "child_cells",
        "child_seq",
        "closed",
        "cls",
        "context",
        "current",
        "escalated",
        "exit_reason",
        "group_stats",
        "idle_since",
        "kwargs",
        "mailbox",
        "name",
        "needs_start",
        "parent_cell",
        "path",
        "policy",
        "receive_timeout",
        "ref",
        "restart_error",
        "restart_stats",
        "restarts",
        "rt_handle",
        "scheduled",
        "space_waiters",
        "stop_reason",
        "stopping_hook_done",
        "strategy",
        "suspended",
        "system",
        "terminated",
        "termination",
        "timer_seq",
        "timers",
        "watchers",
        "watching",
        "worker",
    )

    def __init__(
        self,
        system: ActorSystem,
        parent: ActorCell | None,
        name: str,
        path: str,
        cls: type[Actor] | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        strategy: SupervisorStrategy,
    ) -> None:
        self.system = system
        self.parent_cell = parent
        self.name = name
        self.path = path
        self.ref = ActorRef(self, path)
        self.cls: type[Actor] = cls  # type: ignore[assignment]  # None only for the root
        self.args = args
        self.kwargs = kwargs
        self.strategy = strategy
        self.capacity: int | None = None
        self.policy: MailboxPolicy = "fail"
        if cls is not None:
            self.capacity = cls.mailbox_capacity
            self.policy = cls.mailbox_policy
            if self.capacity is not None and self.capacity < 1:
                raise ValueError(f"{cls.__name__}.mailbox_capacity must be >= 1 or None")
        self.mailbox: deque[Any] | None = None
        self.actor: Actor | None = None
        self.scheduled = False
        self.suspended = False
        self.closed = False
        self.terminated = False
        self.stop_reason: ExitReason = "normal"
        self.stopping_hook_done = False
        self.exit_reason: ExitReason | None = None
        self.needs_start = False
        self.restart_error: BaseException | None = None
        self.worker: asyncio.Task[None] | None = None
        self.action: tuple[int, Any] | None = None
        self.cancel_requested = False
        self.current: Any = None
        self.child_cells: dict[str, ActorCell] | None = None
        self.child_seq = 0
        self.timers: dict[Hashable, _Timer] | None = None
        self.timer_seq = 0
        self.watchers: set[ActorCell] | None = None
        self.watching: set[ActorCell] | None = None
        self.receive_timeout: float | None = None
        self.idle_since = 0.0
        self.rt_handle: TimerHandle | None = None
        self.backoff_handle: TimerHandle | None = None
        self.space_waiters: deque[asyncio.Future[None]] | None = None
        self.restart_stats: RestartStats | None = None
        self.restarts = 0  # over this cell's life, for the admin tree
        self.group_stats: dict[int, RestartStats] | None = None
        self.termination: asyncio.Future[ExitReason] | None = None
        self.escalated = False
        self.context: ActorContext | None = None  # made on first use: an actor that never asks pays nothing

    def __repr__(self) -> str:
        return f"<ActorCell {self.path}>"

    # ------------------------------------------------------------------ for ActorContext

    def spawn(
        self,
        cls: type[Actor],
        name: str | None = None,
        *args: Any,
        supervisor: SupervisorStrategy | None = None,
        **kwargs: Any,
    ) -> ActorRef:
        """Start a child actor and return its ref at once; ``on_start`` runs
        before its first message. ``supervisor`` is the strategy this actor
        applies when that child fails (default: one_for_one, restart)."""
        system = self.system
        if system.closed and self.parent_cell is None:
            raise SystemShutDownError(f"cannot spawn {cls.__name__}: the actor system is shut down")
        if self.closed:
            raise ActorDeadError(self.path, f"cannot spawn {cls.__name__}: parent is stopping")
        children = self.child_cells
        if children is None:
            children = self.child_cells = {}
        if name is None:
            self.child_seq += 1
            name = f"${self.child_seq}"
        elif not name or "/" in name:
            raise InvalidNameError(f"invalid actor name {name!r}: non-empty, no '/'")
        elif name in children:
            state = "stopping" if children[name].closed else "alive"
            raise NameTakenError(f"{self.path}: a child named {name!r} is {state}")
        path = f"/{name}" if self.parent_cell is None else f"{self.path}/{name}"
        cell = ActorCell(system, self, name, path, cls, args, kwargs, supervisor or DEFAULT_STRATEGY)
        cell.actor = cell.construct()
        children[name] = cell
        system.register(cell)
        if type(cell.actor).on_start is not actor_module.Actor.on_start:
            cell.needs_start = True
            cell.schedule()
        return cell.ref

    def watch(self, ref: ActorRef) -> None:
        """Deliver ``Terminated(ref, reason)`` to this actor when ``ref`` stops."""
        target = ref._cell
        if target is self:
            raise ValueError(f"{self.path} cannot watch itself")
        if target.terminated:
            self.enqueue(Terminated(ref, target.exit_reason or "normal"))
            return
        if target.watchers is None:
            target.watchers = set()
        target.watchers.add(self)
        if self.watching is None:
            self.watching = set()
        self.watching.add(target)

    def unwatch(self, ref: ActorRef) -> None:
        target = ref._cell
        if target.watchers is not None:
            target.watchers.discard(self)
        if self.watching is not None:
            self.watching.discard(target)

    def schedule_once(self, delay: float, message: Any, key: Hashable | None = None) -> Hashable:
        """Deliver ``message`` to this actor after ``delay`` seconds.

        Re-using a key supersedes the earlier timer. A cancelled or superseded
        timer never delivers, even if it had already fired into the mailbox.
        """
        if self.closed:
            raise ActorDeadError(self.path, "cannot schedule a timer: actor is stopping")
        timers = self.timers
        if timers is None:
            timers = self.timers = {}
        if key is None:
            key = _UniqueKey()
        old = timers.get(key)
        if old is not None:
            old.handle.cancel()
        self.timer_seq += 1
        generation = self.timer_seq
        handle = self.system.clock.call_later(delay, self._timer_due, key, generation, message)
        timers[key] = _Timer(generation, handle)
        return key

    def cancel_timer(self, key: Hashable) -> bool:
        timers = self.timers
        entry = timers.pop(key, None) if timers else None
        if entry is None:
            return False
        entry.handle.cancel()
        return True

    def set_receive_timeout(self, seconds: float | None) -> None:
        """After ``seconds`` without a message, call ``on_receive_timeout``."""
        if seconds is not None and seconds <= 0:
            raise ValueError("receive timeout must be positive or None")
        self.receive_timeout = seconds
        if self.rt_handle is not None:
            self.rt_handle.cancel()
            self.rt_handle = None
        if seconds is not None:
            self.idle_since = self.system.clock.now()
            self.rt_handle = self.system.clock.call_later(seconds, self._receive_timeout_due)

    # ------------------------------------------------------------------ mailbox

    def construct(self) -> Actor:
        actor_module._constructing.append(self)
        try:
            return self.cls(*self.args, **self.kwargs)
        finally:
            actor_module._constructing.pop()

    def schedule(self) -> None:
        self.system.dispatcher.schedule(self)

    def enqueue(self, message: Any) -> None:
        """Internal delivery (timers, signals): bypasses the capacity bound."""
        if self.closed:
            self.system.dead_letter(self.path, message, "stopped")
            return
        if self.mailbox is None:
            self.mailbox = deque()
        self.mailbox.append(message)
        if not self.scheduled and not self.suspended:
            self.system.dispatcher.schedule(self)

    def is_full(self) -> bool:
        return self.capacity is not None and self.mailbox is not None and len(self.mailbox) >= self.capacity

    async def wait_for_room(self) -> None:
        if self.space_waiters is None:
            self.space_waiters = deque()
        waiter: asyncio.Future[None] = self.system.loop.create_future()
        self.space_waiters.append(waiter)
        await waiter

    def _wake_sender(self) -> None:
        waiters = self.space_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def make_room(self, message: Any) -> bool:
        """Apply the overflow policy; True when ``message`` may be appended."""
        assert self.mailbox is not None and self.capacity is not None
        if self.policy == "drop_oldest":
            dropped = self.mailbox.popleft()
            self.system.drop(self.path, dropped, MailboxFull(self.path, self.capacity))
            return True
        error = MailboxFull(self.path, self.capacity)
        if self.policy == "drop_newest":
            self.system.drop(self.path, message, error)
            return False
        raise error

    # ------------------------------------------------------------------ a turn

    async def run(self, worker: asyncio.Task[None], budget: int) -> int:
        """One turn on ``worker``: pending action, start, then up to ``budget``
        messages. Returns the number of messages handled."""
        self.worker = worker
        handled = 0
        metrics = self.system.metrics
        fields = LOG_FIELDS.set({"actor": self.path})
        try:
            while True:
                try:
                    if self.action is not None:
                        if not await self._perform_action(worker):
                            return handled
                        continue
                    if self.needs_start:
                        if not await self._start_instance():
                            return handled
                        continue
                    if self.suspended:
                        return handled
                    actor = self.actor
                    assert actor is not None
                    receive = actor.receive
                    mailbox = self.mailbox
                    while mailbox:
                        if handled >= budget:
                            return handled
                        message = mailbox.popleft()
                        if self.space_waiters:
                            self._wake_sender()
                        handled += 1
                        metrics.messages += 1
                        self.current = message
                        try:
                            if type(message) in _SPECIAL:
                                await self._special(message, receive)
                            else:
                                await receive(message)
                        except Exception as exc:
                            self.current = None
                            if not await self._handle_failure(exc, message):
                                return handled
                            break
                        self.current = None
                        if self.action is not None:
                            break
                    else:
                        if self.closed:
                            if not self.stopping_hook_done:
                                self.stopping_hook_done = True
                                await self._call_on_stopping()
                                continue  # the hook may have queued messages to itself
                            await self._finish(self.stop_reason, graceful=True)
                        return handled
                except asyncio.CancelledError:
                    if not self.cancel_requested:
                        raise
                    self.cancel_requested = False
                    worker.uncancel()
                    self._drop_current("interrupted")
        finally:
            LOG_FIELDS.reset(fields)
            self.worker = None
            self._after_turn()

    def _after_turn(self) -> None:
        dispatcher = self.system.dispatcher
        if self.terminated:
            dispatcher.done(self)
            return
        if self.action is not None or (
            not self.suspended and (self.mailbox or self.closed or self.needs_start)
        ):
            dispatcher.requeue(self)
            return
        if self.mailbox is not None and not self.mailbox:
            self.mailbox = None
        dispatcher.done(self)
        if self.receive_timeout is not None and not self.suspended:
            self.idle_since = self.system.clock.now()
            if self.rt_handle is None:
                self.rt_handle = self.system.clock.call_later(self.receive_timeout, self._receive_timeout_due)

    async def _start_instance(self) -> bool:
        self.needs_start = False
        error, self.restart_error = self.restart_error, None
        actor = self.actor
        assert actor is not None
        try:
            if error is None:
                await actor.on_start()
            else:
                await actor.on_restart(error)
        except Exception as exc:
            return await self._handle_failure(exc, None)
        return True

    async def _special(self, message: Any, receive: Any) -> None:
        kind = type(message)
        if kind is Ask:
            future = message.future
            try:
                result = await receive(message.message)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                raise
            if not future.done():
                future.set_result(result)
        elif kind is TimerFired:
            timers = self.timers
            entry = timers.get(message.key) if timers else None
            if timers is None or entry is None or entry.generation != message.generation:
                self.system.metrics.stale_timers += 1
                return
            del timers[message.key]
            await receive(message.message)
        elif self.mailbox or self.receive_timeout is None or self.closed:
            return  # ReceiveTimeout made stale by a later message or a new setting
        else:
            assert self.actor is not None
            await self.actor.on_receive_timeout()

    def _timer_due(self, key: Hashable, generation: int, message: Any) -> None:
        timers = self.timers
        entry = timers.get(key) if timers else None
        if entry is None or entry.generation != generation or self.closed:
            return
        self.enqueue(TimerFired(key, generation, message))

    def _receive_timeout_due(self) -> None:
        self.rt_handle = None
        timeout = self.receive_timeout
        if timeout is None or self.closed or self.suspended or self.scheduled or self.mailbox:
            return  # busy or gone; the end of the current turn re-arms
        clock = self.system.clock
        remaining = self.idle_since + timeout - clock.now()
        if remaining > 1e-9:
            self.rt_handle = clock.call_later(remaining, self._receive_timeout_due)
            return
        self.enqueue(RECEIVE_TIMEOUT)

    # ------------------------------------------------------------------ actions

    def _request(self, kind: int, payload: Any) -> None:
        """Record an action for this actor's next turn, interrupting the current one."""
        if self.terminated:
            return
        if self.action is not None and self.action[0] >= kind:
            return
        self.action = (kind, payload)
        worker = self.worker
        if worker is not None:
            if worker is not asyncio.current_task() and not self.cancel_requested:
                self.cancel_requested = True
                worker.cancel()
        elif not self.scheduled:
            self.system.dispatcher.schedule(self)

    async def _perform_action(self, worker: asyncio.Task[None]) -> bool:
        assert self.action is not None
        kind, payload = self.action
        self.action = None
        if self.cancel_requested:
            # The interrupted receive swallowed the cancellation; balance it.
            self.cancel_requested = False
            worker.uncancel()
        if kind == _TERMINATE:
            await self._terminate(payload)
            return False
        if kind == _FAIL:
            error, child = payload
            return await self._handle_failure(error, _Escalated(child))
        error, delay = payload
        if delay > 0:
            self._restart_after(delay, error)
            return False
        await self._restart(error)
        return not self.terminated

    def _drop_current(self, why: str) -> None:
        current, self.current = self.current, None
        if current is not None:
            self.system.drop(self.path, current, ActorDeadError(self.path, f"actor {why}"))

    # ------------------------------------------------------------------ supervision

    async def _handle_failure(self, error: Exception, message: Any) -> bool:
        """Apply the supervisor's directive inside this actor's turn; True when
        the turn goes on (resumed, or restarted in place)."""
        system = self.system
        name = self.cls.__name__
        system.metrics.failures[name] += 1
        log.error(
            "%s (%s) failed on %s: %r",
            self.path,
            name,
            short_repr(message) if message is not None else "start",
            error,
            exc_info=error,
        )
        strategy = self.strategy
        try:
            directive = strategy.decide(error)
        except Exception:
            log.exception("%s: supervisor decider raised; stopping the actor", self.path)
            directive = Directive.STOP
        parent = self.parent_cell
        at_top = parent is None or parent.parent_cell is None
        if directive is Directive.ESCALATE and at_top:
            log.critical("%s: failure escalated past the top level; stopping it", self.path)
            directive = Directive.STOP
        if directive is Directive.RESUME:
            for child in list((self.child_cells or {}).values()):
                child.resume_after_parent()
            return True
        if directive is Directive.STOP:
            await self._terminate(error)
            return False
        if directive is Directive.ESCALATE:
            assert parent is not None
            self.suspended = True
            self.escalated = True
            parent._request(_FAIL, (error, self.path))
            return False
        allowed, delay = self._stats().record(system.clock.now(), strategy)
        if not allowed:
            limit = RestartLimitExceeded(
                self.path, strategy.max_restarts or 0, strategy.within_seconds, error
            )
            log.error("%s", limit)
            await self._terminate(limit)
            if strategy.escalate_on_limit and parent is not None and not at_top:
                parent._request(_FAIL, (limit, self.path))
            return False
        if strategy.kind == "one_for_all":
            for sibling in self._group():
                sibling._request(_RESTART, (error, delay))
        if delay > 0:
            self._restart_after(delay, error)
            return False
        await self._restart(error)
        return not self.terminated

    def _stats(self) -> RestartStats:
        if self.strategy.kind == "one_for_one":
            if self.restart_stats is None:
                self.restart_stats = RestartStats()
            return self.restart_stats
        parent = self.parent_cell
        assert parent is not None
        if parent.group_stats is None:
            parent.group_stats = {}
        return parent.group_stats.setdefault(id(self.strategy), RestartStats())

    def _group(self) -> list[ActorCell]:
        parent = self.parent_cell
        assert parent is not None
        return [
            c
            for c in (parent.child_cells or {}).values()
            if c is not self and c.strategy is self.strategy and not c.closed
        ]

    def _restart_after(self, delay: float, error: BaseException) -> None:
        self.suspended = True
        if self.backoff_handle is not None:
            self.backoff_handle.cancel()
        log.info("%s: restarting in %.3fs", self.path, delay)
        self.backoff_handle = self.system.clock.call_later(delay, self._backoff_elapsed, error)

    def _backoff_elapsed(self, error: BaseException) -> None:
        self.backoff_handle = None
        if self.closed:
            self._request(_TERMINATE, self.stop_reason)
        else:
            self._request(_RESTART, (error, 0.0))

    async def _restart(self, error: BaseException) -> None:
        """Fresh instance, same mailbox; the old instance's children stop first."""
        self._cancel_timers()
        await self._stop_children(graceful=False)
        await self._call_on_stop()
        self.system.metrics.restarts[self.cls.__name__] += 1
        self.restarts += 1
        try:
            self.actor = self.construct()
        except Exception as exc:
            log.error("%s: constructor failed during restart: %r", self.path, exc)
            self.actor = None
            await self._terminate(exc)
            return
        self.needs_start = True
        self.restart_error = error
        self.suspended = False
        self.escalated = False
        log.info("%s: restarted after %r", self.path, error)

    def resume_after_parent(self) -> None:
        """The parent resumed after this child's escalation: carry on too."""
        if self.escalated and not self.terminated:
            self.escalated = False
            self.suspended = False
            if self.mailbox and not self.scheduled:
                self.system.dispatcher.schedule(self)

    # ------------------------------------------------------------------ stopping

    def request_stop(self, reason: ExitReason) -> asyncio.Future[ExitReason]:
        """Graceful: handle what is queued, then stop children, then ``on_stop``."""
        future = self.termination_future()
        if self.closed:
            return future
        self.closed = True
        self.stop_reason = reason
        self._cancel_timers()
        if self.suspended:
            self.kill()
        elif not self.scheduled:
            self.system.dispatcher.schedule(self)
        return future

    def kill(self) -> asyncio.Future[ExitReason]:
        """Stop now: queued messages become dead letters, the running one is cancelled."""
        future = self.termination_future()
        if not self.closed:
            self.closed = True
            self.stop_reason = "killed"
        self._cancel_timers()
        if self.backoff_handle is not None:
            self.backoff_handle.cancel()
            self.backoff_handle = None
        self._request(_TERMINATE, self.stop_reason)
        return future

    def termination_future(self) -> asyncio.Future[ExitReason]:
        if self.termination is None:
            self.termination = self.system.loop.create_future()
            if self.terminated:
                self.termination.set_result(self.exit_reason or "normal")
        return self.termination

    async def _terminate(self, reason: ExitReason) -> None:
        self.closed = True
        self.suspended = True
        self._cancel_timers()
        self._flush_mailbox()
        await self._finish(reason, graceful=False)

    async def _finish(self, reason: ExitReason, graceful: bool) -> None:
        await self._stop_children(graceful)
        if not self.needs_start:  # on_stop pairs with an on_start that ran
            await self._call_on_stop()
        self.finalize(reason)

    async def _call_on_stopping(self) -> None:
        actor = self.actor
        if self.needs_start or actor is None:
            return
        if type(actor).on_stopping is actor_module.Actor.on_stopping:
            return
        try:
            await actor.on_stopping()
        except Exception:
            log.exception("%s: on_stopping raised", self.path)

    async def _call_on_stop(self) -> None:
        actor = self.actor
        if actor is None or type(actor).on_stop is actor_module.Actor.on_stop:
            return
        try:
            await actor.on_stop()
        except Exception:
            log.exception("%s: on_stop raised", self.path)

    async def _stop_children(self, graceful: bool) -> None:
        """Reverse spawn order; a run of siblings of one class stops together."""
        children = self.child_cells
        if not children:
            return
        ordered = list(children.values())
        ordered.reverse()
        for _, group in itertools.groupby(ordered, key=lambda c: c.cls):
            futures = [c.request_stop("shutdown") if graceful else c.kill() for c in group]
            await asyncio.gather(*futures)

    def _cancel_timers(self) -> None:
        if self.timers:
            for entry in self.timers.values():
                entry.handle.cancel()
            self.timers = None
        if self.rt_handle is not None:
            self.rt_handle.cancel()
            self.rt_handle = None
        self.receive_timeout = None

    def _flush_mailbox(self) -> None:
        mailbox, self.mailbox = self.mailbox, None
        while mailbox:
            self.system.dead_letter(self.path, mailbox.popleft(), "stopped")

    def finalize(self, reason: ExitReason) -> None:
        """Unregister, notify watchers and the termination future. Idempotent."""
        if self.terminated:
            return
        self.terminated = True
        self.closed = True
        self.exit_reason = reason
        self.action = None
        self._flush_mailbox()
        waiters, self.space_waiters = self.space_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        system = self.system
        system.unregister(self)
        parent = self.parent_cell
        if parent is not None and parent.child_cells and parent.child_cells.get(self.name) is self:
            del parent.child_cells[self.name]
        for watcher in self.watchers or ():
            if not watcher.closed:
                watcher.enqueue(Terminated(self.ref, reason))
            if watcher.watching is not None:
                watcher.watching.discard(self)
        for target in self.watching or ():
            if target.watchers is not None:
                target.watchers.discard(self)
        self.watchers = self.watching = None
        self.actor = None
        if self.termination is not None and not self.termination.done():
            self.termination.set_result(reason)
        system.metrics.stopped += 1
