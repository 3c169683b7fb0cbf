"""Managed processes: one ``ManagedProcess`` actor per process, a child of its sandbox
session's ``SandboxSessionHost``.

Lifecycle of one process (``process_id``):

- **start**: ``on_start`` asks the session for the container's process agent
  (``sandbox/process_link.py``; one exec per container, however many processes and restarts)
  and starts the command there. Each incarnation gets its own wire id, so a late frame of an
  earlier one is ignored.
- **exit**: with ``restart: never`` (or ``on-failure`` and exit code 0) the actor stops and its
  record says ``exited``. Otherwise the actor fails and its supervisor (the session host,
  ``strategy_for``: the process's ``max_restarts`` within ``restart_window``, with backoff)
  starts a fresh incarnation; past the limit it stops and the record says ``failed``. The
  process agent's loss (``kill -9 -1`` in the container) counts as an exit.
- **health**: with ``health_argv``, a command runs in the sandbox every ``health_interval``;
  three failures in a row fail the actor, which restarts the process.
- **stop**: stdin closed, then after ``STDIN_GRACE`` SIGTERM to its process group, then
  after ``TERM_GRACE`` SIGKILL; every wait is a timer on the engine clock.
- **attach**: one attacher at a time gets the process's stdout and writes its stdin; a
  second gets ``SandboxBusy``. The attachment reads ``b""`` when the incarnation ends.
- **output**: stdout goes from the link's reader thread straight into a byte-bounded ring
  (``ProcessOutput``), never through the actor's mailbox: ``UNATTACHED_BUFFER`` bytes while
  nobody is attached (kept for the next attacher), ``ATTACHED_BUFFER`` while an attacher is
  slow to read. The oldest bytes are dropped and counted (``output_dropped`` in the status,
  ``dropped`` on the next attachment), so a chatty process costs bounded memory.

What survives restarts (restart count, last exit code, the stderr tail) lives in a
``ProcessRecord`` the host keeps, so status is answered even after the actor stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from callboard.engine.actor import Actor
from callboard.engine.ref import ActorRef
from callboard.engine.sandbox_api import ExecResult, SandboxBusy, SandboxError, SandboxUnavailable
from callboard.engine.sandbox_processes import ProcessArgs, ProcessInfo, ProcessState
from callboard.engine.supervision import Backoff, SupervisorStrategy
from callboard.sandbox.agent_link import AgentGone
from callboard.sandbox.process_link import ProcessLink
from callboard.sandbox.tools import SKILL_INSTALL_TIMEOUT

#: stop escalation: stdin closed, then TERM, then KILL (the process's whole group)
STDIN_GRACE = 5.0
TERM_GRACE = 5.0
#: bytes of stderr kept (the tail) for status reports
STDERR_PREVIEW = 4096
#: stdout kept while nobody is attached (for the next attacher), and for a slow attacher;
#: past these the oldest bytes are dropped and counted
UNATTACHED_BUFFER = 256 * 1024
ATTACHED_BUFFER = 8 * 1024 * 1024
#: health check failures in a row that restart the process
HEALTH_FAILURES = 3
#: how long a health command may run
HEALTH_TIMEOUT = 10.0
#: how long the session may take to hand over its process agent (may create the container)
LINK_TIMEOUT = 60.0

_incarnations = itertools.count(1)
#: a process that may use a skill (``sandbox.tools.skills_used`` decides which, if any)
_SKILLS = re.compile(r"\.skills/")


def strategy_for(args: ProcessArgs) -> SupervisorStrategy:
    """The process's restart policy as its supervisor's strategy: restarts with backoff up
    to ``max_restarts`` within ``restart_window``, then stopped (the session carries on)."""
    return SupervisorStrategy(
        max_restarts=args.max_restarts,
        within_seconds=args.restart_window,
        backoff=Backoff(min=0.5, max=10.0, factor=2.0, jitter=0.2),
        escalate_on_limit=False,
    )


class ProcessOutput:
    """A process's output between the link's reader thread and its attacher: stdout in a
    byte-bounded ring that drops the oldest bytes (counted), and the stderr tail.

    Fed on the reader thread, read on the event loop (hence the lock), so output never
    queues in the actor's mailbox: a chatty process nobody reads costs at most the ring.
    Only the current incarnation's output is taken; a restart drops what the last one left
    unread (counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = UNATTACHED_BUFFER
        self._current: str | None = None
        self._stderr = bytearray()
        self._waiting = False
        self._wake: Callable[[], None] | None = None
        #: stdout bytes dropped over the process's life, and that total when the last attacher left
        self.dropped = 0
        self.dropped_at_detach = 0

    def begin(self, wire_id: str) -> None:
        """A new incarnation: only its output is taken from now on."""
        with self._lock:
            self._current = wire_id
            self._drop(self._size)

    def stdout(self, wire_id: str, data: bytes) -> None:
        with self._lock:
            if wire_id != self._current:
                return  # a late chunk of an earlier incarnation
            self._chunks.append(data)
            self._size += len(data)
            if self._size > self._limit:
                self._drop(self._size - self._limit)
            wake = None
            if self._waiting:
                wake, self._wake, self._waiting = self._wake, None, False
        if wake is not None:
            wake()

    def stderr(self, wire_id: str, data: bytes) -> None:
        with self._lock:
            if wire_id != self._current:
                return
            self._stderr += data
            if len(self._stderr) > STDERR_PREVIEW:
                del self._stderr[: len(self._stderr) - STDERR_PREVIEW]

    def take(self, wake: Callable[[], None]) -> bytes:
        """Everything buffered; when nothing is, ``b""`` and ``wake`` is called (once, from
        the reader thread) when something arrives."""
        with self._lock:
            if not self._chunks:
                self._waiting, self._wake = True, wake
                return b""
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            return data

    def attached(self, attached: bool) -> None:
        """An attacher may fall further behind than the ring kept for nobody."""
        with self._lock:
            self._limit = ATTACHED_BUFFER if attached else UNATTACHED_BUFFER
            self._waiting, self._wake = False, None
            if not attached:
                self.dropped_at_detach = self.dropped
                if self._size > self._limit:
                    self._drop(self._size - self._limit)

    @property
    def buffered(self) -> int:
        return self._size

    def stderr_text(self) -> str:
        with self._lock:
            return self._stderr.decode("utf-8", "replace")

    def _drop(self, excess: int) -> None:
        """Drop ``excess`` bytes from the oldest end (the lock is held)."""
        self.dropped += excess
        self._size -= excess
        while excess:
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                excess -= len(head)
            else:
                self._chunks[0] = head[excess:]
                excess = 0


class ProcessRecord:
    """A process's report across incarnations; mutated only on the event loop."""

    def __init__(self, args: ProcessArgs, env_keys: list[str]) -> None:
        self.args = args
        self.env_keys = sorted(env_keys)
        self.state: ProcessState = "starting"
        self.pid: int | None = None
        self.starts = 0
        self.exit_code: int | None = None
        self.error: str | None = None
        self.attached = False
        self.output = ProcessOutput()

    def info(self) -> ProcessInfo:
        return ProcessInfo(
            process_id=self.args.process_id,
            state=self.state,
            argv=list(self.args.argv),
            env_keys=self.env_keys,
            pid=self.pid,
            restarts=max(0, self.starts - 1),
            exit_code=self.exit_code,
            attached=self.attached,
            stderr_preview=self.output.stderr_text(),
            output_buffered=self.output.buffered,
            output_dropped=self.output.dropped,
            error=self.error,
        )


# ---------------------------------------------------------------------- messages


class LinkRequest:
    """Asked of the session host: answered with the container's ``ProcessLink``."""


@dataclass(frozen=True)
class SkillsRequest:
    """Asked of the session host for a process that names a skill: answered with its environment
    with the skills' venvs on ``PATH`` (built on first use), or the failed build's ``ExecResult``."""

    cwd: str
    argv: tuple[str, ...]
    env: dict[str, str]


@dataclass(frozen=True)
class HealthExec:
    """Asked of the session host: run a health command; answered with its exit code or None."""

    argv: tuple[str, ...]


class GetInfo:
    """Answered with a ``ProcessInfo`` (once the process has started)."""


class StopProcess:
    """Answered with a future that resolves to the final ``ProcessInfo``."""


class AttachProcess:
    """Answered with an ``Attachment``, or a ``SandboxBusy`` (returned, not raised) when
    someone else holds it."""


@dataclass(frozen=True)
class _Frame:
    header: dict[str, Any]
    payload: bytes


@dataclass(frozen=True)
class _Detach:
    attachment: ProcessAttachment


@dataclass(frozen=True)
class _Escalate:
    signal: int


class _HealthTick:
    pass


@dataclass(frozen=True)
class _HealthDone:
    ok: bool


class ProcessEnded(Exception):
    """The process ended and its policy restarts it (raised to the supervisor)."""


# ---------------------------------------------------------------------- attachment


class ProcessAttachment:
    """The one attacher's end: stdout taken from the process's ring, stdin written through
    the link. ``dropped``: stdout bytes this attacher never saw (dropped since the last
    attacher left, or while this one was slow to read)."""

    def __init__(self, owner: ActorRef, link: ProcessLink, wire_id: str, output: ProcessOutput) -> None:
        self._owner = owner
        self._link = link
        self._wire_id = wire_id
        self._output = output
        self._since = output.dropped_at_detach
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ended = False
        self._closed = False
        output.attached(True)

    @property
    def dropped(self) -> int:
        return self._output.dropped - self._since

    def _wake(self) -> None:  # on the link's reader thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is reading any more
            self._loop.call_soon_threadsafe(self._arrived.set)

    async def write(self, data: bytes) -> None:
        if self._closed or self._ended:
            raise SandboxUnavailable("the process is no longer attached (it ended or restarted)")
        try:
            await asyncio.to_thread(self._link.write, self._wire_id, data)
        except AgentGone as gone:
            raise SandboxUnavailable(f"the sandbox's process agent was lost: {gone}") from None

    async def read(self) -> bytes:
        while not self._closed:
            self._arrived.clear()
            data = self._output.take(self._wake)
            if data:
                return data
            if self._ended:
                return b""
            await self._arrived.wait()
        return b""

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._arrived.set()
            self._owner.tell(_Detach(self))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._arrived.set()


# ---------------------------------------------------------------------- actor


class ManagedProcess(Actor):
    """One incarnation of one managed process (see the module docstring)."""

    def __init__(self, record: ProcessRecord, env: Mapping[str, str]) -> None:
        self.record = record
        self.args = record.args
        self._env = dict(env)
        self._link: ProcessLink | None = None
        self._wire_id = f"{self.args.process_id}.{next(_incarnations)}"
        self._running = False
        self._stopping: list[asyncio.Future[ProcessInfo]] = []
        self._attachment: ProcessAttachment | None = None
        self._health_failures = 0
        self._health_task: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        record = self.record
        record.state, record.pid = "starting", None
        parent = self.context.parent
        assert parent is not None
        link: ProcessLink = await parent.ask(LinkRequest(), timeout=LINK_TIMEOUT)
        env = self._env
        if any(_SKILLS.search(part) for part in (self.args.cwd, *self.args.argv)):
            request = SkillsRequest(self.args.cwd, tuple(self.args.argv), env)
            prepared = await parent.ask(request, timeout=SKILL_INSTALL_TIMEOUT + LINK_TIMEOUT)
            if isinstance(prepared, ExecResult):  # its packages could not be installed: as a failed start
                record.error = prepared.stderr.strip()[-STDERR_PREVIEW:]
                record.starts += 1
                raise ProcessEnded(record.error)
            env = prepared
        loop = asyncio.get_running_loop()
        me = self.context.ref
        output, wire_id = record.output, self._wire_id
        output.begin(wire_id)

        def listener(header: dict[str, Any], payload: bytes) -> None:  # on the link's reader thread
            if header.get("t") == "out":  # straight into the bounded ring, not the mailbox
                (output.stderr if header.get("s") == 2 else output.stdout)(wire_id, payload)
            else:
                loop.call_soon_threadsafe(me.tell, _Frame(header, payload))

        try:
            pid = await asyncio.to_thread(
                link.start, self._wire_id, list(self.args.argv), self.args.cwd, env, listener
            )
        except RuntimeError as error:  # the command itself cannot start: say so, retry by policy
            record.error = str(error)[:300]
            record.starts += 1
            raise ProcessEnded(record.error) from None
        except AgentGone as gone:
            raise SandboxUnavailable(f"the sandbox's process agent was lost: {gone}") from None
        self._link = link
        self._running = True
        record.starts += 1
        record.state, record.pid, record.exit_code = "running", pid, None
        if self.args.health_argv:
            self.context.schedule_once(self.args.health_interval, _HealthTick(), key="health")

    async def on_stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        self._detach()
        link = self._link
        if link is not None and self._running:  # stop before start: the old one goes first
            self._running = False
            with contextlib.suppress(AgentGone, OSError):
                await asyncio.to_thread(link.signal, self._wire_id, signal.SIGKILL)
            link.forget(self._wire_id)
            if self.record.state in ("running", "stopping"):
                self.record.state = "exited"
        info = self.record.info()
        for waiter in self._stopping:
            if not waiter.done():
                waiter.set_result(info)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _Frame):
            return self._frame(message.header, message.payload)
        if isinstance(message, GetInfo):
            return self.record.info()
        if isinstance(message, AttachProcess):
            return self._attach()
        if isinstance(message, _Detach):
            if self._attachment is message.attachment:
                self._detach()
        elif isinstance(message, StopProcess):
            return self._stop()
        elif isinstance(message, _Escalate):
            await self._signal(message.signal)
        elif isinstance(message, _HealthTick):
            self._health_task = asyncio.ensure_future(self._health())
        elif isinstance(message, _HealthDone):
            self._health_result(message.ok)
        return None

    # ------------------------------------------------------------------ events

    def _frame(self, header: dict[str, Any], payload: bytes) -> None:
        if header.get("id") != self._wire_id or not self._running:
            return  # a late frame of an earlier incarnation
        kind = header.get("t")
        if kind in ("exit", "lost"):
            self._running = False
            code = header.get("code")
            self._ended(None if code is None else int(code), lost=kind == "lost")

    def _ended(self, code: int | None, lost: bool) -> None:
        record = self.record
        record.exit_code = code
        record.pid = None
        if lost:
            record.error = "the sandbox's process agent was lost"
        self._detach()
        policy = self.args.restart
        if self._stopping or policy == "never" or (policy == "on-failure" and code == 0):
            record.state = "exited"
            self.context.stop()
            return
        record.state = "starting"
        raise ProcessEnded(f"exit code {code}" if not lost else "process agent lost")

    def _attach(self) -> ProcessAttachment | SandboxError:
        """The attachment, or the refusal as a value (a raise would fail this actor)."""
        if not self._running or self._link is None:
            return SandboxUnavailable(f"process {self.args.process_id!r} is not running")
        if self._attachment is not None:
            return SandboxBusy(f"process {self.args.process_id!r} is attached by another caller")
        self._attachment = ProcessAttachment(self.context.ref, self._link, self._wire_id, self.record.output)
        self.record.attached = True
        return self._attachment

    def _detach(self) -> None:
        """The attacher is gone (it closed, or this incarnation ended): buffer for the next."""
        if self._attachment is not None:
            self._attachment.end()
            self._attachment = None
            self.record.attached = False
            self.record.output.attached(False)

    def _stop(self) -> asyncio.Future[ProcessInfo]:
        waiter: asyncio.Future[ProcessInfo] = asyncio.get_running_loop().create_future()
        if not self._running or self._link is None:
            self.context.stop()
            self._stopping.append(waiter)
            return waiter
        first = not self._stopping
        self._stopping.append(waiter)
        if first:
            self.record.state = "stopping"
            self.context.cancel_timer("health")
            with contextlib.suppress(AgentGone):
                self._link.close_stdin(self._wire_id)
            self.context.schedule_once(STDIN_GRACE, _Escalate(signal.SIGTERM), key="stop")
        return waiter

    async def _signal(self, sig: int) -> None:
        if not self._running or self._link is None:
            return
        if sig == signal.SIGTERM:  # armed first: the grace counts from the timer, not the send
            self.context.schedule_once(TERM_GRACE, _Escalate(signal.SIGKILL), key="stop")
        with contextlib.suppress(AgentGone):
            await asyncio.to_thread(self._link.signal, self._wire_id, sig)

    # ------------------------------------------------------------------ health

    async def _health(self) -> None:
        parent = self.context.parent
        assert parent is not None and self.args.health_argv
        try:
            code = await parent.ask(HealthExec(tuple(self.args.health_argv)), timeout=HEALTH_TIMEOUT + 30)
        except Exception:  # engine trouble or a busy session: a failed check, counted as such
            code = None
        self.context.ref.tell(_HealthDone(code == 0))

    def _health_result(self, ok: bool) -> None:
        if not self._running or self._stopping:
            return
        self._health_failures = 0 if ok else self._health_failures + 1
        if self._health_failures >= HEALTH_FAILURES:
            self.record.error = f"{HEALTH_FAILURES} health checks failed in a row"
            raise ProcessEnded(self.record.error)
        self.context.schedule_once(self.args.health_interval, _HealthTick(), key="health")
