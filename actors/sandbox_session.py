"""One sandbox session: one ``SandboxSessionActor`` thread owning one container.

``SandboxSessionActor`` is a ``ThreadedWorker`` (the docker SDK blocks): it
creates its container lazily on the first call, runs the tools on it, and
removes it when it stops. ``SandboxSessionHost`` is the asyncio side the
manager spawns and supervises:

- idle for ``idle_ttl``: the receive timeout passivates it, which removes the
  container;
- the engine fails or the container is lost: the worker raises
  ``SandboxUnavailable``, the caller gets it, and the host fails, so its
  supervisor restarts it (with backoff) on a fresh worker and, lazily, a fresh
  container;
- an expected failure (file not found, edit ambiguous, policy) is returned as
  a ``CallOutcome`` value and does not disturb the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from callboard.actors.sandbox_process import (
    HealthExec,
    LinkRequest,
    ManagedProcess,
    ProcessRecord,
    SkillsRequest,
    strategy_for,
)
from callboard.engine.ref import ActorRef
from callboard.engine.sandbox_api import ExecArgs, ExecResult, SandboxError, SandboxUnavailable, ToolName
from callboard.engine.sandbox_processes import ProcessArgs, ProcessInfo
from callboard.engine.signals import Terminated
from callboard.engine.threaded import ThreadedHost, ThreadedWorker
from callboard.sandbox.backend import SandboxBackend, SandboxSession, SessionSpec
from callboard.sandbox.tools import WorkspaceTools

log = logging.getLogger("callboard.sandbox")

BackendFactory = Callable[[], SandboxBackend]


@dataclass(frozen=True)
class SessionCall:
    """Run one tool in the session; answered with a ``CallOutcome``."""

    tool: ToolName
    args: BaseModel

    def __repr__(self) -> str:  # the runtime logs failed messages: keep arguments (env, content) out
        return f"SessionCall({self.tool})"


@dataclass(frozen=True)
class CallOutcome:
    value: BaseModel | None = None
    error: SandboxError | None = None

    def unwrap(self) -> BaseModel:
        if self.error is not None:
            raise type(self.error)(*self.error.args)
        assert self.value is not None
        return self.value


@dataclass(frozen=True)
class ProcessLookup:
    """Find (or, with ``start``, start) a managed process; answered with a ``ProcessHandle``."""

    process_id: str
    start: ProcessArgs | None = None

    def __repr__(self) -> str:  # keep the environment out of failure logs
        return f"ProcessLookup({self.process_id})"


@dataclass(frozen=True)
class ProcessHandle:
    ref: ActorRef | None
    record: ProcessRecord | None


@dataclass(frozen=True)
class ProcessesRunning:
    """Told to the manager when a session's managed processes start or all stop: capacity
    eviction spares sessions that run some while it has others to take."""

    session: str
    running: bool


class ReportRequest:
    """Answered with a ``SessionReport`` (for the status page)."""


@dataclass(frozen=True)
class SessionReport:
    container_id: str | None
    processes: tuple[ProcessInfo, ...]


class SessionState:
    """What the host may read of its worker (plain attributes, set on the worker thread)."""

    __slots__ = ("container_id", "removed")

    def __init__(self) -> None:
        self.container_id: str | None = None
        self.removed = False


class SandboxSessionActor(ThreadedWorker):
    """Owns one container, created on the first call and removed on stop."""

    def __init__(self, spec: SessionSpec, backend_factory: BackendFactory, state: SessionState) -> None:
        super().__init__()
        self.spec = spec
        self._factory = backend_factory
        self._state = state
        self._backend: SandboxBackend | None = None
        self._session: SandboxSession | None = None
        self._tools: WorkspaceTools | None = None

    def handle(self, message: Any) -> Any:
        if isinstance(message, LinkRequest):
            self._ensure()
            assert self._session is not None
            return self._session.process_link()
        if isinstance(message, SkillsRequest):
            return self._ensure().with_skills(message.cwd, message.argv, message.env)
        if not isinstance(message, SessionCall):
            raise TypeError(f"SandboxSessionActor cannot handle {type(message).__name__}")
        try:
            outcome = CallOutcome(value=self._ensure().call(message.tool, message.args))
        except SandboxUnavailable:
            raise  # engine trouble or a lost container: fail, so the supervisor replaces us
        except SandboxError as error:  # the caller's problem (or a refused mount): report it
            outcome = CallOutcome(error=error)
        if self._session is not None and not self._session.healthy:
            self._discard()  # the next call starts a fresh container
        return outcome

    def _ensure(self) -> WorkspaceTools:
        if self._tools is None:
            if self._backend is None:
                self._backend = self._factory()
            session = self._backend.create_session(self.spec)
            self._session = session
            self._state.container_id = session.container_id
            self._state.removed = False
            self._tools = WorkspaceTools(session)
        return self._tools

    def _discard(self) -> None:
        session, self._session, self._tools = self._session, None, None
        if session is not None and not self._state.removed:
            try:
                session.stop()
            except SandboxError as error:
                log.warning("sandbox %s: could not remove its container: %s", self.spec.container_name, error)
        self._state.container_id = None

    def on_stop(self) -> None:
        self._discard()
        if self._backend is not None:
            self._backend.close()


class SandboxSessionHost(ThreadedHost):
    """The supervised, passivating actor of one sandbox session."""

    def __init__(self, spec: SessionSpec, backend_factory: BackendFactory, idle_ttl: float) -> None:
        self.state = SessionState()
        super().__init__(SandboxSessionActor, spec, backend_factory, self.state)
        self.spec = spec
        self._factory = backend_factory
        self._idle_ttl = idle_ttl
        self._processes: dict[str, ActorRef] = {}
        #: every managed process this session started, running or not (for status)
        self.records: dict[str, ProcessRecord] = {}

    async def on_start(self) -> None:
        await super().on_start()
        self.context.set_receive_timeout(self._idle_ttl)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, ProcessLookup):
            return self._lookup(message)
        if isinstance(message, ReportRequest):
            return SessionReport(self.state.container_id, tuple(self.process_infos()))
        if isinstance(message, Terminated):
            record = self.records.get(message.ref.name.removeprefix("proc-"))
            if record is not None and isinstance(message.reason, BaseException):
                record.state = "failed"
                record.error = record.error or f"gave up after failures: {message.reason}"
            self._tell_running()
            return None
        if isinstance(message, HealthExec):
            outcome = await super().receive(SessionCall("exec", ExecArgs(argv=list(message.argv))))
            value = outcome.value if isinstance(outcome, CallOutcome) else None
            return value.exit_code if isinstance(value, ExecResult) else None
        return await super().receive(message)

    async def on_receive_timeout(self) -> None:
        if any(ref.is_alive for ref in self._processes.values()):
            return  # running processes keep the sandbox: the timeout re-arms after this turn
        await super().on_receive_timeout()

    def _lookup(self, message: ProcessLookup) -> ProcessHandle:
        """The process's actor (started when ``message.start`` and not running) and record."""
        name = message.process_id
        ref = self._processes.get(name)
        alive = ref is not None and ref.is_alive
        if message.start is not None and not alive:
            env = {**self.spec.profile.env, **message.start.env}
            record = ProcessRecord(message.start, list(env))
            self.records[name] = record
            ref = self.context.spawn(
                ManagedProcess, f"proc-{name}", record, env, supervisor=strategy_for(message.start)
            )
            self.context.watch(ref)
            self._processes[name] = ref
            alive = True
            self._tell_running()
        return ProcessHandle(ref if alive else None, self.records.get(name))

    def _tell_running(self) -> None:
        parent = self.context.parent
        if parent is not None:
            running = any(ref.is_alive for ref in self._processes.values())
            parent.tell(ProcessesRunning(self.spec.session, running))

    def process_infos(self) -> list[ProcessInfo]:
        return [record.info() for record in self.records.values()]

    async def on_stop(self) -> None:
        # Remove the container first: a command still running ends at once, so
        # the worker thread stops promptly instead of finishing its work.
        container = self.state.container_id
        if container is not None:
            removed = await asyncio.to_thread(_remove, self._factory, container, self.spec.container_name)
            self.state.removed = removed
        await super().on_stop()


def _remove(factory: BackendFactory, container: str, name: str) -> bool:
    backend: SandboxBackend | None = None
    try:
        backend = factory()
        backend.remove_container(container)
        log.debug("sandbox %s removed", name)
        return True
    except SandboxError as error:
        log.warning("sandbox %s: container not removed (the orphan sweep will): %s", name, error)
        return False
    finally:
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()
