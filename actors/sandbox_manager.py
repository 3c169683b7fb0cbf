"""SandboxManager: one per fleet. Scope keys to session actors, bounded, reaped and swept.

The manager is an asyncio actor and never touches the engine itself: it
answers ``Acquire`` by spawning (not awaiting) a ``SandboxSessionHost``, whose
worker thread creates the container on its first call. So two cold starts run
side by side on their own threads, and no lock is ever held across engine
work.

- ``max_sessions`` bounds live plus stopping sessions (containers). A new scope
  at the limit evicts the least recently used idle session and waits for its
  container to go; when every session is busy the caller gets ``SandboxBusy``.
- Idle sessions passivate themselves (receive timeout = ``idle_ttl``); their
  container is removed as they stop.
- A ``SandboxJanitor`` thread probes the engine and sweeps orphans: at start,
  then every ``sweep_interval``, it removes containers labelled with this
  fleet that no live session owns (left by a crash, or by a failed removal).
  Its host fails while the engine is unreachable and its supervisor retries
  with backoff, for as long as it takes; meanwhile callers get
  ``SandboxUnavailable`` at once instead of waiting.
- Persistent workspaces: once the engine is up, the janitor probes whether it
  can loop-mount ext4 images (a hard quota); until it knows, a call that needs
  a new persistent workspace waits.
- Tenant budgets (``sandbox.budgets``): the janitor meters the CPU of tenants'
  containers after each of their calls and every ``METER_INTERVAL`` (with the
  disk their workspaces hold); charges are journaled as ``usage.cpu`` audit
  rows and read back at start. A tenant over a budget gets
  ``SandboxQuotaExceeded`` for new calls; calls already running finish.

The fleet name must be unique per engine: the sweep treats containers of the
same fleet from another process as orphans.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol, runtime_checkable

from callboard.actors.sandbox_session import BackendFactory, ProcessesRunning, SandboxSessionHost
from callboard.engine.actor import Actor
from callboard.engine.audit import AuditEntry
from callboard.engine.ref import ActorRef
from callboard.engine.sandbox_api import (
    SandboxBusy,
    SandboxError,
    SandboxOff,
    SandboxQuotaExceeded,
    SandboxUnavailable,
)
from callboard.engine.signals import Terminated
from callboard.engine.supervision import Backoff, SupervisorStrategy
from callboard.engine.threaded import ThreadedHost, ThreadedWorker
from callboard.sandbox.backend import EngineInfo, Meter, SandboxBackend, SessionSpec, WorkspaceQuota
from callboard.sandbox.budgets import CPU_TOOL, TenantBudgets, TenantUsage
from callboard.sandbox.config import SandboxProfile, SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.engine import off_reason, resolve_endpoint
from callboard.sandbox.policy import session_name
from callboard.sandbox.workspaces import volume_name

log = logging.getLogger("callboard.sandbox")

#: failures kept for the status page
ERROR_RING = 50
#: how often tenants' containers and workspaces are metered, and CPU charges journaled
METER_INTERVAL = 10.0


class AuditSink(Protocol):
    """Where audit rows go: the journal (``JournalStore.append_audit``)."""

    def append_audit(self, entry: AuditEntry) -> None: ...


@runtime_checkable
class AuditSource(Protocol):
    """A sink that can also be read (the journal): tenants' CPU charges survive restarts."""

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


_FLEET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: A session that keeps failing is stopped; its next caller starts it afresh.
SANDBOX_SESSION_STRATEGY = SupervisorStrategy(
    max_restarts=5, within_seconds=60.0, backoff=Backoff(min=0.2, max=5.0), escalate_on_limit=False
)


# ---------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Acquire:
    """Find or start the session for ``key``; answered by Grant, Denied or Retry."""

    key: str
    profile: str
    network: bool | None
    tenant: str | None = None


@dataclass(frozen=True)
class Release:
    """A call granted for ``session`` finished (told, never asked)."""

    key: str
    session: str


@dataclass(frozen=True)
class Grant:
    ref: ActorRef
    session: str
    profile: SandboxProfile
    engine_timeout: float


@dataclass(frozen=True)
class Denied:
    error: SandboxError


@dataclass(frozen=True)
class Retry:
    """At capacity while an evicted container goes away: ask again once ``ready`` resolves."""

    ready: asyncio.Future[None]


@dataclass(frozen=True)
class EngineSuspect:
    """A session reported the engine unavailable: probe it."""

    reason: str


class StatusRequest:
    """Answered with a ``SandboxStatus``."""


@dataclass(frozen=True)
class Audited:
    """One finished sandbox call (told by ``SessionTools``): journaled, and kept in the
    error ring when it failed."""

    entry: AuditEntry
    error: str | None = None


@dataclass(frozen=True)
class SessionEntry:
    """A live session as the manager sees it (its process details come from the session)."""

    key: str
    session: str
    ref: ActorRef
    in_flight: int
    idle_for: float


@dataclass(frozen=True)
class RecentError:
    at: float
    bot: str
    scope: str
    tool: str
    status: str
    message: str


@dataclass(frozen=True)
class SandboxStatus:
    fleet: str
    state: Literal["off", "starting", "up", "down"]
    reason: str
    engine: str
    sessions: int
    stopping: int
    max_sessions: int
    orphans_removed: int
    sweeps: int
    last_sweep_error: str | None
    idle_ttl: float = 0.0
    calls: int = 0
    live: tuple[SessionEntry, ...] = ()
    #: the last ``ERROR_RING`` failures (calls, engine, sweeps, sessions), oldest first
    errors: tuple[RecentError, ...] = ()
    #: the quota new persistent workspaces get (None: no profile has them, or not probed yet)
    workspaces: WorkspaceQuota | None = None
    tenants: tuple[TenantUsage, ...] = ()
    tenant_sessions: dict[str, int] = field(default_factory=dict)
    tenant_max_sessions: dict[str, int] = field(default_factory=dict)
    tenant_cpu_window: float = 0.0


class _SweepTick:
    pass


@dataclass(frozen=True)
class _SweepDone:
    removed: list[str] | None
    error: str | None


@dataclass(frozen=True)
class _EngineUp:
    info: EngineInfo


@dataclass(frozen=True)
class _EngineDown:
    reason: str


class _Probe:
    pass


@dataclass(frozen=True)
class _Sweep:
    keep: frozenset[str]
    instance: str
    workspace_max_age: float | None = None


@dataclass(frozen=True)
class _ProbeWorkspaces:
    image: str
    directory: str | None


@dataclass(frozen=True)
class _WorkspacesProbed:
    quota: WorkspaceQuota


@dataclass(frozen=True)
class _Meter:
    sessions: list[str]
    disk: bool


@dataclass(frozen=True)
class _Metered:
    meter: Meter | None
    error: str | None


class _MeterTick:
    pass


@dataclass(frozen=True)
class _CpuRestored:
    rows: list[tuple[Any, ...]]
    error: str | None


# ---------------------------------------------------------------------- janitor


class SandboxJanitor(ThreadedWorker):
    """The manager's thread for engine-wide work: probes and orphan sweeps."""

    def __init__(self, backend_factory: BackendFactory, fleet: str) -> None:
        super().__init__()
        self._factory = backend_factory
        self._fleet = fleet
        self._backend: SandboxBackend | None = None

    def handle(self, message: Any) -> Any:
        if self._backend is None:
            self._backend = self._factory()
        backend = self._backend
        if isinstance(message, _Probe):
            return backend.ping()
        if isinstance(message, _Sweep):
            removed = []
            for record in backend.list_containers(self._fleet):
                if record.instance == message.instance and record.session in message.keep:
                    continue
                if backend.remove_container(record.id):
                    removed.append(record.name)
            if message.workspace_max_age is not None:
                removed += backend.prune_workspaces(self._fleet, message.workspace_max_age)
            return removed
        if isinstance(message, _ProbeWorkspaces):
            return backend.probe_workspaces(message.image, message.directory, self._fleet)
        if isinstance(message, _Meter):
            return backend.meter(self._fleet, message.sessions, message.disk)
        raise TypeError(f"SandboxJanitor cannot handle {type(message).__name__}")

    def on_stop(self) -> None:
        if self._backend is not None:
            self._backend.close()


class JanitorHost(ThreadedHost):
    """Probes the engine on every start; while it is unreachable this actor
    fails, and its supervisor retries with backoff until it answers."""

    async def on_start(self) -> None:
        await super().on_start()
        await self.receive(_Probe())

    async def receive(self, message: Any) -> Any:
        parent = self.context.parent
        try:
            result = await super().receive(message)
        except SandboxUnavailable as error:
            if parent is not None:
                parent.tell(_EngineDown(str(error)))
            raise
        if isinstance(message, _Probe) and parent is not None:
            parent.tell(_EngineUp(result))
        return result


# ---------------------------------------------------------------------- manager


@dataclass(eq=False)
class _Entry:
    key: str
    session: str
    ref: ActorRef
    signature: tuple[str, bool]
    tenant: str | None = None
    in_flight: int = 0
    #: it runs managed processes: evicted only when no other idle session can go
    pinned: bool = False


class SandboxManager(Actor):
    """Spawn as ``context.spawn(SandboxManager, "sandbox", fleet_name, settings)``."""

    def __init__(
        self,
        fleet: str,
        settings: SandboxSettings,
        backend_factory: BackendFactory | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        if not _FLEET.match(fleet):
            raise ValueError(f"invalid fleet name {fleet!r} for sandbox labels")
        self.fleet = fleet
        self.settings = settings
        self.instance = secrets.token_hex(6)
        self._off: str | None = None
        self._engine_display = "(custom backend)"
        if backend_factory is None:
            endpoint = resolve_endpoint(settings)
            if endpoint is None:
                self._off = off_reason(settings)
            else:
                self._engine_display = endpoint.display
                backend_factory = partial(DockerBackend, endpoint, settings)
        self._factory = backend_factory
        self._janitor: ActorRef | None = None
        self._live: OrderedDict[str, _Entry] = OrderedDict()  # by key, least recently used first
        self._sessions: dict[str, _Entry] = {}  # by session name: live and stopping
        self._waiters: list[asyncio.Future[None]] = []
        self._generation = 0
        self._engine: Literal["starting", "up", "down"] = "starting"
        self._engine_reason = ""
        self._swept_at_start = False
        self._sweeping = False
        self._sweeps = 0
        self._orphans_removed = 0
        self._last_sweep_error: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._audit = audit
        self._calls = 0
        self._errors: deque[RecentError] = deque(maxlen=ERROR_RING)
        self._used: dict[str, float] = {}  # session name -> clock time of its last grant or release
        self._needs_workspaces = any(p.persistent_workspace for p in settings.profiles.values())
        self._workspaces: WorkspaceQuota | None = None
        self._probing = False
        self._budgets = TenantBudgets(
            dict(settings.tenant_max_cpu_seconds), settings.tenant_cpu_window, dict(settings.tenant_max_disk)
        )
        self._cpu_seen: dict[str, float] = {}  # session name -> its container's CPU seconds when last metered
        self._metering = False
        self._meter_next: tuple[set[str], bool] | None = None  # to meter once the running pass is done
        self._restored = not (settings.tenant_max_cpu_seconds and isinstance(audit, AuditSource))

    # ------------------------------------------------------------------ lifecycle

    async def on_start(self) -> None:
        if self._off is not None:
            log.info("sandboxes are off for fleet %s: %s", self.fleet, self._off)
            return
        assert self._factory is not None
        strategy = SupervisorStrategy(
            max_restarts=None,
            backoff=Backoff(min=0.5, max=self.settings.engine_retry_max, factor=1.75, jitter=0.2),
        )
        self._janitor = self.context.spawn(
            JanitorHost, "janitor", SandboxJanitor, self._factory, self.fleet, supervisor=strategy
        )
        self.context.schedule_once(self.settings.sweep_interval, _SweepTick(), key="sweep")
        if self._budgets.active:
            self.context.schedule_once(METER_INTERVAL, _MeterTick(), key="meter")
        if not self._restored:
            self._background(self._restore_cpu())

    async def on_stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._wake_waiters()
        self._save_cpu()

    # ------------------------------------------------------------------ messages

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Acquire):
            return self._acquire(message)
        if isinstance(message, Release):
            self._release(message)
        elif isinstance(message, Terminated):
            self._terminated(message)
        elif isinstance(message, EngineSuspect):
            if self._janitor is not None and self._engine != "down":
                self._janitor.tell(_Probe())
        elif isinstance(message, _EngineUp):
            self._engine_up(message.info)
        elif isinstance(message, _EngineDown):
            if self._engine != "down":
                log.warning("sandbox engine for fleet %s is down: %s", self.fleet, message.reason)
                self._error("", "", "engine", "unavailable", message.reason)
            self._engine, self._engine_reason = "down", message.reason
        elif isinstance(message, _SweepTick):
            self._start_sweep()
        elif isinstance(message, _SweepDone):
            self._sweep_done(message)
        elif isinstance(message, Audited):
            self._audited(message)
        elif isinstance(message, _WorkspacesProbed):
            self._workspaces_probed(message.quota)
        elif isinstance(message, _MeterTick):
            self._meter_tick()
        elif isinstance(message, _Metered):
            self._metered(message)
        elif isinstance(message, _CpuRestored):
            self._cpu_restored(message)
        elif isinstance(message, ProcessesRunning):
            entry = self._sessions.get(message.session)
            if entry is not None:
                entry.pinned = message.running
        elif isinstance(message, StatusRequest):
            return self._status()
        else:
            log.warning("SandboxManager ignored %r", message)
        return None

    def _acquire(self, request: Acquire) -> Grant | Denied | Retry:
        if self._off is not None:
            return Denied(SandboxOff(f"sandboxes are off: {self._off}"))
        if self._engine == "down":
            return Denied(
                SandboxUnavailable(f"sandbox unavailable: {self._engine_reason} (retrying in the background)")
            )
        try:
            profile = self.settings.profile(request.profile)
        except ValueError as error:
            return Denied(SandboxError(str(error)))
        refused = self._budgets.refusal(request.tenant, self.context.system.clock.wall())
        if refused is not None:
            return Denied(SandboxQuotaExceeded(refused))
        if not self._restored and request.tenant in self._budgets.max_cpu:
            return self._wait_for_slot()  # its CPU used before a restart is still being read
        if profile.persistent_workspace and self._workspaces is None:
            return self._wait_for_slot()  # which quota workspaces get is being probed
        network = profile.network if request.network is None else request.network
        signature = (request.profile, network)
        entry = self._live.get(request.key)
        if entry is not None:
            if entry.ref.is_alive and entry.signature == signature:
                return self._grant(entry, profile)
            if not entry.ref.is_alive or entry.in_flight == 0:
                self._retire(entry)  # passivating, or its policy changed: replace it
            else:
                return self._grant(entry, profile)  # busy: keep its old settings for now
        tenant_limit = self.settings.tenant_max_sessions.get(request.tenant or "")
        if tenant_limit is not None:
            mine = [e for e in self._sessions.values() if e.tenant == request.tenant]
            if len(mine) >= tenant_limit:
                victim = self._evictable(lambda e: e.tenant == request.tenant)
                if victim is not None:
                    self._retire(victim)
                if victim is not None or any(self._live.get(e.key) is not e for e in mine):
                    return self._wait_for_slot()  # one of the tenant's containers is going away
                busy = f"tenant {request.tenant!r} has all {tenant_limit} of its sandboxes busy"
                return Denied(SandboxBusy(busy))
        if len(self._sessions) < self.settings.max_sessions:
            entry = self._spawn(request.key, signature, profile, network, request.tenant)
            return self._grant(entry, profile)
        victim = self._evictable(lambda e: True)
        if victim is not None:
            log.info(
                "sandbox limit (%d) reached: evicting idle session %s", len(self._sessions), victim.session
            )
            self._retire(victim)
        if len(self._live) < len(self._sessions):  # something is stopping: a slot frees soon
            return self._wait_for_slot()
        return Denied(
            SandboxBusy(f"all {self.settings.max_sessions} sandbox sessions are busy; try again shortly")
        )

    def _evictable(self, which: Callable[[_Entry], bool]) -> _Entry | None:
        """The least recently used idle session ``which`` accepts, one without running
        processes first."""
        idle = [e for e in self._live.values() if not e.in_flight and which(e)]
        return next((e for e in idle if not e.pinned), idle[0] if idle else None)

    def _wait_for_slot(self) -> Retry:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(ready)
        return Retry(ready)

    def _grant(self, entry: _Entry, profile: SandboxProfile) -> Grant:
        entry.in_flight += 1
        self._used[entry.session] = self.context.system.clock.now()
        self._live.move_to_end(entry.key)
        return Grant(entry.ref, entry.session, profile, self.settings.engine_timeout)

    def _spawn(
        self,
        key: str,
        signature: tuple[str, bool],
        profile: SandboxProfile,
        network: bool,
        tenant: str | None,
    ) -> _Entry:
        assert self._factory is not None
        self._generation += 1
        name = session_name(key, self._generation)
        spec = SessionSpec(
            fleet=self.fleet,
            session=name,
            instance=self.instance,
            image=self.settings.image_for(profile),
            profile=profile,
            network=network,
            tenant=tenant,
            workspace_volume=volume_name(self.fleet, key) if profile.persistent_workspace else None,
            workspace_images=self.settings.workspace_dir
            if self._workspaces is not None and self._workspaces.kind == "loop"
            else None,
        )
        ref = self.context.spawn(
            SandboxSessionHost,
            name,
            spec,
            self._factory,
            self.settings.idle_ttl,
            supervisor=SANDBOX_SESSION_STRATEGY,
        )
        self.context.watch(ref)
        entry = _Entry(key, name, ref, signature, tenant)
        self._live[key] = entry
        self._sessions[name] = entry
        return entry

    def _retire(self, entry: _Entry) -> None:
        """Stop a session; it keeps its slot until its container is gone."""
        if self._live.get(entry.key) is entry:
            del self._live[entry.key]
        entry.ref.stop()

    def _release(self, message: Release) -> None:
        entry = self._sessions.get(message.session)
        if entry is not None and entry.in_flight > 0:
            entry.in_flight -= 1
            self._used[entry.session] = self.context.system.clock.now()
        if entry is not None and entry.tenant in self._budgets.max_cpu:
            self._meter([entry.session], disk=False)  # what the call just burned counts at once

    def _terminated(self, message: Terminated) -> None:
        entry = self._sessions.pop(message.ref.name, None)
        if entry is None:
            return
        if self._live.get(entry.key) is entry:
            del self._live[entry.key]
        self._used.pop(entry.session, None)
        self._cpu_seen.pop(entry.session, None)
        if isinstance(message.reason, BaseException):
            log.warning("sandbox session %s stopped after failures: %r", entry.session, message.reason)
            self._error("", entry.key, "session", "failed", repr(message.reason))
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ engine and sweeps

    def _engine_up(self, info: EngineInfo) -> None:
        if self._engine != "up":
            log.info(
                "sandbox engine for fleet %s: %s %s (API %s) at %s",
                self.fleet,
                info.product,
                info.version,
                info.api_version,
                info.endpoint,
            )
        self._engine, self._engine_reason = "up", ""
        if self._needs_workspaces and self._workspaces is None and not self._probing:
            self._probing = True
            self._background(self._probe_workspaces())
        if not self._swept_at_start:
            self._swept_at_start = True
            self._start_sweep(reschedule=False)

    def _start_sweep(self, reschedule: bool = True) -> None:
        if self._sweeping or self._janitor is None or self._engine == "down":
            if reschedule:
                self.context.schedule_once(self.settings.sweep_interval, _SweepTick(), key="sweep")
            return
        self._sweeping = True
        self._background(self._sweep(self._janitor, frozenset(self._sessions)))

    def _background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self, janitor: ActorRef, keep: frozenset[str]) -> None:
        timeout = 4 * self.settings.engine_timeout + 10
        try:
            sweep = _Sweep(keep, self.instance, self.settings.workspace_max_age)
            removed = await janitor.ask(sweep, timeout=timeout)
        except Exception as error:
            self.ref.tell(_SweepDone(None, f"{type(error).__name__}: {error}"))
        else:
            self.ref.tell(_SweepDone(list(removed), None))

    def _sweep_done(self, done: _SweepDone) -> None:
        self._sweeping = False
        self._sweeps += 1
        self._last_sweep_error = done.error
        if done.removed:
            self._orphans_removed += len(done.removed)
            log.info(
                "removed %d orphaned sandbox container(s): %s", len(done.removed), ", ".join(done.removed)
            )
        if done.error is not None:
            log.warning("sandbox orphan sweep failed: %s", done.error)
            self._error("", "", "sweep", "failed", done.error)
        self.context.schedule_once(self.settings.sweep_interval, _SweepTick(), key="sweep")

    # ------------------------------------------------------------------ workspaces and budgets

    async def _probe_workspaces(self) -> None:
        janitor = self._janitor
        assert janitor is not None
        image = self.settings.image_for(
            next(p for p in self.settings.profiles.values() if p.persistent_workspace)
        )
        try:
            probe = _ProbeWorkspaces(image, self.settings.workspace_dir)
            quota = await janitor.ask(probe, timeout=2 * self.settings.engine_timeout + 60)
        except Exception as error:
            quota = WorkspaceQuota("measured", f"the loop probe failed: {type(error).__name__}: {error}")
        self.ref.tell(_WorkspacesProbed(quota))

    def _workspaces_probed(self, quota: WorkspaceQuota) -> None:
        self._probing = False
        self._workspaces = quota
        log.info("persistent workspaces of fleet %s: %s quota (%s)", self.fleet, quota.kind, quota.reason)
        self._wake_waiters()

    def _meter_tick(self) -> None:
        self._save_cpu()
        tenants = [e.session for e in self._sessions.values() if e.tenant is not None]
        self._meter(tenants, disk=bool(self._budgets.max_disk))
        self.context.schedule_once(METER_INTERVAL, _MeterTick(), key="meter")

    def _meter(self, sessions: list[str], disk: bool) -> None:
        """Ask the janitor for usage; one pass at a time, later requests merged into the next."""
        if self._janitor is None or self._engine == "down" or not (sessions or disk):
            return
        if self._metering:
            waiting, with_disk = self._meter_next or (set(), False)
            self._meter_next = (waiting | set(sessions), with_disk or disk)
            return
        self._metering = True
        self._background(self._run_meter(self._janitor, _Meter(sessions, disk)))

    async def _run_meter(self, janitor: ActorRef, request: _Meter) -> None:
        try:
            meter = await janitor.ask(request, timeout=2 * self.settings.engine_timeout + 10)
        except Exception as error:
            self.ref.tell(_Metered(None, f"{type(error).__name__}: {error}"))
        else:
            self.ref.tell(_Metered(meter, None))

    def _metered(self, message: _Metered) -> None:
        self._metering = False
        if message.error is not None:
            self._error("", "", "meter", "failed", message.error)
        elif message.meter is not None:
            now = self.context.system.clock.wall()
            for session, total in message.meter.cpu.items():
                entry = self._sessions.get(session)
                if entry is None or entry.tenant is None:
                    continue
                seen = self._cpu_seen.get(session, 0.0)
                # less than before: the session replaced its container (same name), which began at 0
                self._budgets.charge(entry.tenant, total - seen if total >= seen else total, now)
                self._cpu_seen[session] = total
            if message.meter.disk is not None:
                self._budgets.disk = dict(message.meter.disk)
        pending, self._meter_next = self._meter_next, None
        if pending is not None:
            self._meter(sorted(pending[0]), disk=pending[1])

    def _save_cpu(self) -> None:
        """Journal the CPU charges since the last save (one ``usage.cpu`` row per tenant)."""
        if self._audit is None:
            return
        for tenant, seconds in self._budgets.take_unsaved().items():
            entry = AuditEntry(
                bot="",
                tenant=tenant,
                scope="",
                session=None,
                handler=None,
                user_id=None,
                tool=CPU_TOOL,
                target=f"{seconds:.3f} CPU-seconds",
                exit_code=None,
                status="ok",
                duration=seconds,
                bytes_in=0,
                bytes_out=0,
            )
            try:
                self._audit.append_audit(entry)
            except Exception as error:
                log.warning("tenant CPU charge not stored: %s", error)

    async def _restore_cpu(self) -> None:
        assert isinstance(self._audit, AuditSource)
        since = self.context.system.clock.wall() - self.settings.tenant_cpu_window
        sql = (
            "SELECT tenant, at, duration FROM sandbox_audit WHERE tool = ? AND at >= ? AND tenant IS NOT NULL"
        )
        try:
            rows = await self._audit.query(sql, (CPU_TOOL, since))
        except Exception as error:
            self.ref.tell(_CpuRestored([], f"{type(error).__name__}: {error}"))
        else:
            self.ref.tell(_CpuRestored(list(rows), None))

    def _cpu_restored(self, message: _CpuRestored) -> None:
        self._restored = True
        if message.error is not None:
            log.warning("tenants' CPU use before this start could not be read: %s", message.error)
            self._error("", "", "budgets", "failed", message.error)
        for tenant, at, seconds in sorted(message.rows, key=lambda row: float(row[1])):
            self._budgets.charge(str(tenant), float(seconds), float(at), saved=True)
        self._wake_waiters()

    def _audited(self, message: Audited) -> None:
        self._calls += 1
        entry = message.entry
        if message.error is not None:
            self._error(entry.bot, entry.scope, entry.tool, entry.status, message.error)
        if self._audit is not None:
            try:
                self._audit.append_audit(entry)
            except Exception as error:  # a journal in trouble must not stop sandbox calls
                log.warning("sandbox audit row not stored: %s", error)

    def _error(self, bot: str, scope: str, tool: str, status: str, message: str) -> None:
        self._errors.append(RecentError(time.time(), bot, scope, tool, status, message[:500]))

    def _status(self) -> SandboxStatus:
        now = self.context.system.clock.now()
        live = tuple(
            SessionEntry(e.key, e.session, e.ref, e.in_flight, now - self._used.get(e.session, now))
            for e in self._live.values()
        )
        return SandboxStatus(
            fleet=self.fleet,
            state="off" if self._off is not None else self._engine,
            reason=self._off or self._engine_reason,
            engine=self._engine_display,
            sessions=len(self._live),
            stopping=len(self._sessions) - len(self._live),
            max_sessions=self.settings.max_sessions,
            orphans_removed=self._orphans_removed,
            sweeps=self._sweeps,
            last_sweep_error=self._last_sweep_error,
            idle_ttl=self.settings.idle_ttl,
            calls=self._calls,
            live=live,
            errors=tuple(self._errors),
            workspaces=self._workspaces,
            tenants=tuple(self._budgets.report(self._tenants(), self.context.system.clock.wall())),
            tenant_sessions=self._tenant_sessions(),
            tenant_max_sessions=dict(self.settings.tenant_max_sessions),
            tenant_cpu_window=self.settings.tenant_cpu_window,
        )

    def _tenants(self) -> set[str]:
        return {e.tenant for e in self._sessions.values() if e.tenant is not None} | set(
            self.settings.tenant_max_sessions
        )

    def _tenant_sessions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self._sessions.values():
            if entry.tenant is not None:
                counts[entry.tenant] = counts.get(entry.tenant, 0) + 1
        return counts
