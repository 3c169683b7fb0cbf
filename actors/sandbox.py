"""Sandbox sessions as actors: the public API the fleet and the handlers use.

Wiring (in the fleet actor)::

    manager = spawn_sandbox_manager(self.context, fleet.name, fleet.sandbox)  # None when no sandbox block
    factory = sandbox_factory(manager, bot.sandbox, bot.id)  # (chat_type, chat_id, thread, user_id) -> tools

Use (in a handler)::

    tools = factory(chat_type, chat_id, thread, user_id)      # engine.sandbox_api.SandboxTools
    result = await tools.exec(ExecArgs(argv=["python3", "-c", code]))

The pieces:

- ``SandboxManager`` (``actors.sandbox_manager``): one per fleet; scope keys to
  session actors, ``max_sessions`` with LRU eviction, idle TTL, orphan sweeps,
  engine probing with supervised backoff.
- ``SandboxSessionActor`` / ``SandboxSessionHost`` (``actors.sandbox_session``):
  one container each, created on first use, removed on stop.
- ``SessionTools``: ``SandboxTools`` for one scope key; checks the bot's policy
  before every call, then asks the manager for the session and the session for
  the work, each with a time limit, so a caller always gets a result or a
  ``SandboxError`` (never a hang).
- ``tools_for`` / ``sandbox_factory``: build those, or a ``NoSandbox`` that
  explains why there is none (no engine, bot not enabled, no user id).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from callboard.actors import sandbox_audit as audit
from callboard.actors.sandbox_manager import (
    Acquire,
    Audited,
    AuditSink,
    Denied,
    EngineSuspect,
    Grant,
    Release,
    Retry,
    SandboxManager,
    SandboxStatus,
    StatusRequest,
)
from callboard.actors.sandbox_process import AttachProcess, GetInfo, StopProcess
from callboard.actors.sandbox_session import (
    ProcessHandle,
    ProcessLookup,
    SandboxSessionActor,
    SandboxSessionHost,
    SessionCall,
)
from callboard.engine.audit import AuditEntry
from callboard.engine.errors import ActorDeadError, AskTimeout
from callboard.engine.ref import ActorRef
from callboard.engine.sandbox_api import (
    EditArgs,
    EditResult,
    ExecArgs,
    ExecResult,
    GlobArgs,
    GlobResult,
    GrepArgs,
    GrepResult,
    NoSandbox,
    ReadArgs,
    ReadResult,
    SandboxBusy,
    SandboxError,
    SandboxOff,
    SandboxPolicyError,
    SandboxProcessNotFound,
    SandboxTools,
    SandboxUnavailable,
    ToolName,
    WriteArgs,
    WriteResult,
)
from callboard.engine.sandbox_processes import Attachment, ProcessArgs, ProcessInfo
from callboard.engine.supervision import Backoff, SupervisorStrategy
from callboard.sandbox.config import SandboxPolicy, SandboxSettings
from callboard.sandbox.policy import ScopeError, allowed_tools, denial, scope_key
from callboard.sandbox.tools import call_timeout

if TYPE_CHECKING:
    from collections.abc import Callable

    from callboard.engine.context import ActorContext

__all__ = [
    "SandboxManager",
    "SandboxSessionActor",
    "SandboxSessionHost",
    "SandboxStatus",
    "SessionTools",
    "StatusRequest",
    "sandbox_factory",
    "sandbox_status",
    "spawn_sandbox_manager",
    "tools_for",
]

#: How long a caller waits for the manager to answer, and for a sandbox slot to free up.
MANAGER_TIMEOUT = 10.0
SLOT_WAIT = 30.0
#: a process's start may create the container and the process agent first
PROCESS_START_TIMEOUT = 90.0
#: stdin close + TERM grace + KILL grace, and then some
PROCESS_STOP_TIMEOUT = 20.0
#: The manager never gives up on its own failures; they are bugs, logged each time.
MANAGER_STRATEGY = SupervisorStrategy(max_restarts=None, backoff=Backoff(min=0.5, max=30.0))

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")


def spawn_sandbox_manager(
    context: ActorContext,
    fleet: str,
    settings: SandboxSettings | None,
    name: str = "sandbox",
    audit: AuditSink | None = None,
) -> ActorRef | None:
    """Start the fleet's manager under ``context`` (a fleet actor's), or None without settings.
    ``audit`` (the journal) receives one row per sandbox call."""
    if settings is None:
        return None
    return context.spawn(SandboxManager, name, fleet, settings, audit=audit, supervisor=MANAGER_STRATEGY)


async def sandbox_status(manager: ActorRef) -> SandboxStatus:
    status: SandboxStatus = await manager.ask(StatusRequest(), timeout=MANAGER_TIMEOUT)
    return status


def tools_for(
    manager: ActorRef | None,
    policy: SandboxPolicy,
    bot_id: str,
    chat_type: str,
    chat_id: str,
    user_id: str | None,
    *,
    thread: str | None = None,
    handler: str | None = None,
    run: str | None = None,
) -> SandboxTools:
    """The sandbox tools of one event's scope under ``policy``, or a ``NoSandbox`` saying why not.
    ``run`` identifies the handler run (``scope: run``, ``{run}`` in a template); unset, each
    call of this function is a run of its own."""
    if manager is None:
        return NoSandbox(SandboxOff("sandboxes are off: the fleet has no sandbox configuration"))
    if not policy.enabled:
        return NoSandbox(SandboxOff(f"sandboxes are disabled for bot {bot_id!r} (bots[].sandbox.enabled)"))
    try:
        key = scope_key(policy, bot_id, chat_type, chat_id, user_id, thread, run or secrets.token_hex(8))
    except ScopeError as error:
        return NoSandbox(SandboxPolicyError(str(error)))
    return SessionTools(manager, policy, bot_id, key, handler, user_id)


def sandbox_factory(
    manager: ActorRef | None, policy: SandboxPolicy, bot_id: str, handler: str | None = None
) -> Callable[[str, str, str | None, str | None], SandboxTools | None]:
    """``(chat_type, chat_id, thread, user_id) -> tools`` for one bot; None when the bot has no sandbox."""

    def build(chat_type: str, chat_id: str, thread: str | None, user_id: str | None) -> SandboxTools | None:
        if manager is None or not policy.enabled:
            return None
        return tools_for(manager, policy, bot_id, chat_type, chat_id, user_id, thread=thread, handler=handler)

    return build


class SessionTools:
    """``SandboxTools`` for one scope key: policy first, then manager, then session."""

    def __init__(
        self,
        manager: ActorRef,
        policy: SandboxPolicy,
        bot_id: str,
        key: str,
        handler: str | None = None,
        user_id: str | None = None,
    ) -> None:
        self._manager = manager
        self._policy = policy
        self._bot_id = bot_id
        self._handler = handler
        self._user_id = user_id or None
        self.key = key
        self._session: str | None = None  # the last session granted (for the audit rows)

    @property
    def tools(self) -> frozenset[ToolName]:
        return allowed_tools(self._policy, self._handler)

    async def exec(self, args: ExecArgs) -> ExecResult:
        return await self._call("exec", args, ExecResult)

    async def read(self, args: ReadArgs) -> ReadResult:
        return await self._call("read", args, ReadResult)

    async def write(self, args: WriteArgs) -> WriteResult:
        return await self._call("write", args, WriteResult)

    async def edit(self, args: EditArgs) -> EditResult:
        return await self._call("edit", args, EditResult)

    async def glob(self, args: GlobArgs) -> GlobResult:
        return await self._call("glob", args, GlobResult)

    async def grep(self, args: GrepArgs) -> GrepResult:
        return await self._call("grep", args, GrepResult)

    # ------------------------------------------------------------------ managed processes

    async def start_process(self, args: ProcessArgs) -> ProcessInfo:
        return await self._audited("process.start", args, self._start_process(args))

    async def _start_process(self, args: ProcessArgs) -> ProcessInfo:
        """Start a managed process (a command, so the ``exec`` policy applies), or find it running."""
        handle = await self._process(args.process_id, args)
        assert handle.ref is not None
        info: ProcessInfo = await self._ask_process(handle.ref, GetInfo(), PROCESS_START_TIMEOUT)
        return info

    async def get_process(self, process_id: str = "default") -> ProcessInfo:
        handle = await self._process(process_id, None)
        if handle.ref is not None:
            info: ProcessInfo = await self._ask_process(handle.ref, GetInfo(), PROCESS_START_TIMEOUT)
            return info
        if handle.record is None:
            raise SandboxProcessNotFound(f"no managed process {process_id!r} in this sandbox")
        return handle.record.info()

    async def stop_process(self, process_id: str = "default") -> ProcessInfo:
        return await self._audited("process.stop", process_id, self._stop_process(process_id))

    async def _stop_process(self, process_id: str = "default") -> ProcessInfo:
        handle = await self._process(process_id, None)
        if handle.ref is None:
            if handle.record is None:
                raise SandboxProcessNotFound(f"no managed process {process_id!r} in this sandbox")
            return handle.record.info()
        done = await self._ask_process(handle.ref, StopProcess(), MANAGER_TIMEOUT)
        try:
            info: ProcessInfo = await asyncio.wait_for(done, PROCESS_STOP_TIMEOUT)
        except TimeoutError:
            raise SandboxBusy(
                f"process {process_id!r} did not stop within {PROCESS_STOP_TIMEOUT:g}s"
            ) from None
        return info

    async def attach(self, process_id: str = "default") -> Attachment:
        return await self._audited("process.attach", process_id, self._attach(process_id))

    async def _attach(self, process_id: str = "default") -> Attachment:
        handle = await self._process(process_id, None)
        if handle.ref is None:
            raise SandboxProcessNotFound(f"no running managed process {process_id!r} in this sandbox")
        attachment = await self._ask_process(handle.ref, AttachProcess(), PROCESS_START_TIMEOUT)
        if isinstance(attachment, SandboxError):
            raise attachment
        assert isinstance(attachment, Attachment)
        return attachment

    def record_call(
        self, process_id: str, name: str, status: str, duration: float, bytes_in: int, bytes_out: int
    ) -> None:
        entry = AuditEntry(
            bot=self._bot_id,
            tenant=self._policy.tenant,
            scope=self.key,
            session=self._session,
            handler=self._handler,
            user_id=self._user_id,
            tool="process.call",
            target=f"{process_id}: {name}"[: audit.TARGET_LIMIT],
            exit_code=None,
            status=status,
            duration=duration,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
        )
        self._manager.tell(Audited(entry, None if status == "ok" else f"{process_id}: {name}: {status}"))

    async def _process(self, process_id: str, start: ProcessArgs | None) -> ProcessHandle:
        refused = denial(self._policy, "exec", self._bot_id, self._handler)
        if refused is not None:
            raise SandboxPolicyError(refused)
        grant = await self._acquire()
        self._session = grant.session
        try:
            handle: ProcessHandle = await grant.ref.ask(
                ProcessLookup(process_id, start), timeout=MANAGER_TIMEOUT
            )
        except ActorDeadError:
            raise SandboxUnavailable("the sandbox session stopped; try again") from None
        except AskTimeout as error:
            raise SandboxBusy(f"the sandbox did not answer within {error.timeout:g}s") from None
        finally:
            self._manager.tell(Release(self.key, grant.session))
        return handle

    async def _ask_process(self, ref: ActorRef, message: Any, timeout: float) -> Any:
        try:
            return await ref.ask(message, timeout=timeout)
        except ActorDeadError:
            raise SandboxUnavailable("the managed process stopped (see get_process)") from None
        except AskTimeout as error:
            raise SandboxBusy(f"the managed process did not answer within {error.timeout:g}s") from None
        except SandboxError:
            raise
        except Exception as error:
            raise SandboxUnavailable(f"the managed process failed: {error}") from error

    async def _call(self, tool: ToolName, args: BaseModel, result_type: type[R]) -> R:
        started = time.monotonic()
        try:
            value = await self._run(tool, args, result_type)
        except Exception as error:
            self._audit(tool, args, None, started, error)
            raise
        self._audit(tool, args, value, started, None)
        return value

    async def _audited(self, kind: str, args: BaseModel | str, call: Awaitable[T]) -> T:
        """Await a managed-process call and audit it (its arguments, never its output)."""
        started = time.monotonic()
        try:
            result = await call
        except Exception as error:
            self._audit(kind, args, None, started, error)
            raise
        self._audit(kind, args, None, started, None)
        return result

    def _audit(
        self,
        tool: str,
        args: BaseModel | str,
        value: BaseModel | None,
        started: float,
        error: BaseException | None,
    ) -> None:
        """One row per call, told to the manager (which journals it); never the contents."""
        exit_code, status = audit.outcome(value, error)
        entry = AuditEntry(
            bot=self._bot_id,
            tenant=self._policy.tenant,
            scope=self.key,
            session=self._session,
            handler=self._handler,
            user_id=self._user_id,
            tool=tool,
            target=audit.target_of(args),
            exit_code=exit_code,
            status=status,
            duration=time.monotonic() - started,
            bytes_in=audit.bytes_in(args),
            bytes_out=audit.bytes_out(value),
        )
        self._manager.tell(Audited(entry, None if error is None else str(error)[:500]))

    async def _run(self, tool: ToolName, args: BaseModel, result_type: type[R]) -> R:
        refused = denial(self._policy, tool, self._bot_id, self._handler)
        if refused is not None:
            raise SandboxPolicyError(refused)
        for _ in range(3):  # a session may stop (idle, evicted) between grant and call
            grant = await self._acquire()
            self._session = grant.session
            try:
                outcome = await grant.ref.ask(
                    SessionCall(tool, args),
                    timeout=call_timeout(grant.profile, grant.engine_timeout, tool, args),
                )
            except ActorDeadError:
                continue
            except AskTimeout as error:
                raise SandboxBusy(f"the sandbox did not answer within {error.timeout:g}s") from None
            except SandboxUnavailable as error:
                self._manager.tell(EngineSuspect(str(error)))
                raise
            except SandboxError:
                raise
            except Exception as error:
                raise SandboxUnavailable(f"the sandbox failed: {error!r}") from error
            finally:
                self._manager.tell(Release(self.key, grant.session))
            value = outcome.unwrap()
            if not isinstance(value, result_type):
                raise TypeError(f"{tool} returned {type(value).__name__}, not {result_type.__name__}")
            return value
        raise SandboxUnavailable("the sandbox session kept stopping; try again")

    async def _acquire(self) -> Grant:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SLOT_WAIT
        request = Acquire(self.key, self._policy.profile, self._policy.network, self._policy.tenant)
        while True:
            reply = await self._ask_manager(request)
            if isinstance(reply, Grant):
                return reply
            if isinstance(reply, Denied):
                raise type(reply.error)(*reply.error.args)
            assert isinstance(reply, Retry)
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(asyncio.shield(reply.ready), remaining)
            except TimeoutError:
                raise SandboxBusy(f"no sandbox slot came free within {SLOT_WAIT:g}s") from None

    async def _ask_manager(self, request: Acquire) -> Any:
        try:
            return await self._manager.ask(request, timeout=MANAGER_TIMEOUT)
        except ActorDeadError:
            raise SandboxUnavailable("the sandbox manager is not running") from None
        except AskTimeout:
            raise SandboxBusy(f"the sandbox manager did not answer within {MANAGER_TIMEOUT:g}s") from None
