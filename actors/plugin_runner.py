"""RunnerHost: one plugin runner process and its connection, as a supervised actor.

Lifecycle (one instance per process; a restart is a fresh instance):

1. ``on_start``: a private socket directory, a Unix server that takes one
   connection, then ``python -m callboard.plugin.runner`` with a one-time
   session token in its environment, or (``isolation: container``) the same
   runner in a sandbox container with the token in a file
   (``actors.plugin_container``). The runner must say ``hello`` with that
   token and then ``ready`` within ``start_timeout`` each, or the start fails.
2. Running: the hub gets the link; a health check every ``health_interval``
   must be answered within ``health_timeout``; the process and the link are
   watched.
3. Failure (the process exits, the link closes, a health check fails): the
   process is killed at once and the actor raises ``RunnerDown``; its parent
   restarts it with the engine's restart intensity and backoff
   (``PluginSupervisor``'s strategy). The old process is gone before the new
   one starts.
4. Graceful stop: ``prepare_shutdown`` (in-flight events finish),
   ``shutdown`` (plugins unload, logs flush), SIGTERM, SIGKILL, each stage
   waiting at most ``stop_timeout``; a container is then removed.

Health is the runner answering, not the socket being open: a runner stuck in
a blocking call keeps its socket and fails its health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from callboard.actors.plugin_container import (
    TOKEN_FILE,
    ContainerProcess,
    HostProcess,
    PluginContainers,
    RunnerProcess,
)
from callboard.engine.actor import Actor
from callboard.engine.errors import ActorDeadError
from callboard.engine.plugin_protocol import (
    ENV_MEMORY,
    ENV_PARENT,
    ENV_RUNNER,
    ENV_SOCKET,
    ENV_TOKEN,
    Action,
    Link,
    LinkClosed,
    RemoteError,
)
from callboard.engine.sandbox_api import SandboxError
from callboard.handlers.plugin.config import PluginRuntimeConfig, PluginSpec
from callboard.handlers.plugin.connection import RunnerConnection
from callboard.handlers.plugin.hub import PluginHub

log = logging.getLogger("callboard.plugins")

RUNNER_MODULE = "callboard.plugin.runner"
#: how long a closed link waits for the runner's exit status (a container's comes through its engine)
_EXIT_GRACE = 2.0


class RunnerDown(Exception):
    """The runner exited, its link closed, or it failed a health check."""


class _Health:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _Down:
    """The watched runner (``proc``) or its link went; stale once that runner is replaced."""

    reason: str
    proc: RunnerProcess


@dataclass(frozen=True, slots=True)
class ReloadPlugin:
    """Load the plugin's files afresh in its runner (the others keep running)."""

    name: str


@dataclass(frozen=True, slots=True)
class PushConfig:
    """The plugin's config values changed: validate and apply them in the runner."""

    name: str


class RunnerHost(Actor):
    def __init__(
        self,
        runner: str,
        hub: PluginHub,
        settings: PluginRuntimeConfig,
        containers: PluginContainers | None = None,
    ) -> None:
        self.runner = runner
        self.hub = hub
        self.settings = settings
        self.containers = containers
        self.proc: RunnerProcess | None = None
        self.link: Link | None = None
        self.conn: RunnerConnection | None = None
        self.server: asyncio.Server | None = None
        self.directory: str | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.link_task: asyncio.Task[None] | None = None
        self.stopping = False

    # ------------------------------------------------------------------ start

    async def on_start(self) -> None:
        settings = self.settings
        specs = self.hub.specs_of(self.runner)
        token = secrets.token_urlsafe(32)
        level = logging.getLogger(f"callboard.plugin.{self.runner}").getEffectiveLevel()
        self.conn = conn = RunnerConnection(self.hub, self.runner, token, specs, level)
        # mode 0700, and short: a Unix socket path has at most 107 bytes
        if self.directory is not None:  # a restart: the previous runner's directory goes
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = tempfile.mkdtemp(prefix="cb-plugin-")
        path = os.path.join(self.directory, "sock")
        self.server = await asyncio.start_unix_server(self._accept, path)
        os.chmod(path, 0o600)
        limits = [s.memory_limit for s in specs if s.memory_limit is not None]
        memory = str(max(limits) if limits else settings.memory_limit)
        if specs and specs[0].isolation == "container":  # a runner's plugins share one isolation
            self.proc = proc = await self._start_container(specs, path, token, memory)
        else:
            self.proc = proc = await self._start_process(path, token, memory)
        exited = asyncio.ensure_future(proc.wait())
        self.tasks.append(exited)
        self.tasks.append(asyncio.ensure_future(self._drain(proc.stdout)))
        pid = await self._before_exit(conn.hello, exited, "say hello")
        registrations = await self._before_exit(conn.ready, exited, "load its plugins")
        assert self.link is not None
        if isinstance(proc, ContainerProcess):
            pid = proc.pid  # its pid on this machine, not in its container
        self.hub.attach(self.runner, self.link, pid, registrations)
        self.tasks.append(asyncio.ensure_future(self._watch(exited)))
        self._arm_health()
        log.info("plugin runner %s ready (pid %d): %s", self.runner, pid, ", ".join(s.name for s in specs))

    async def _start_process(self, path: str, token: str, memory: str) -> RunnerProcess:
        env = {
            **os.environ,
            ENV_SOCKET: path,
            ENV_TOKEN: token,
            ENV_RUNNER: self.runner,
            ENV_PARENT: str(os.getpid()),
            ENV_MEMORY: memory,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            RUNNER_MODULE,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        return HostProcess(proc)

    async def _start_container(
        self, specs: list[PluginSpec], path: str, token: str, memory: str
    ) -> RunnerProcess:
        """The runner in a sandbox container; never a host process instead."""
        if self.containers is None:
            raise RunnerDown(
                f"runner {self.runner}: isolation: container needs the fleet's sandbox, which is off"
            )
        # no parent check: the engine is not its parent; its socket closing ends it
        env = {ENV_SOCKET: path, ENV_RUNNER: self.runner, ENV_PARENT: "0", ENV_MEMORY: memory}
        try:
            return await ContainerProcess.start(self.containers, self.runner, specs, env, path, token)
        except SandboxError as exc:
            raise RunnerDown(f"runner {self.runner}: its container did not start: {exc}") from None

    async def on_restart(self, error: BaseException) -> None:
        self.hub.restarted(self.runner)
        log.warning("plugin runner %s: restarting after: %s", self.runner, error)
        await self.on_start()

    async def _before_exit(self, future: asyncio.Future[Any], exited: asyncio.Future[int], what: str) -> Any:
        """``future``'s result, unless the runner exits or the start timeout passes first."""
        waiters: set[asyncio.Future[Any]] = {future, exited}
        done, _ = await asyncio.wait(
            waiters, timeout=self.settings.start_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if future in done:
            return future.result()  # HandshakeRefused for a wrong token
        await self._kill()
        if exited in done:
            raise RunnerDown(
                f"runner {self.runner} exited ({self._exit_reason(exited.result())}) before it could {what}"
            )
        raise RunnerDown(f"runner {self.runner} did not {what} within {self.settings.start_timeout:.0f}s")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.link is not None or self.conn is None:
            writer.close()  # one connection per runner; later ones are strangers
            return
        if self.directory is not None:  # a container runner has read its token file by now
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, TOKEN_FILE))
        self.link = Link(reader, writer, self.conn.on_request)
        self.link_task = asyncio.ensure_future(self.link.run())
        if self.server is not None:
            self.server.close()

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        """The runner's stdout and stderr (prints, the log fallback) go to its log."""
        with contextlib.suppress(ConnectionError, ValueError):
            async for line in stream:
                if self.conn is not None:
                    text = line.decode("utf-8", "replace").rstrip()
                    self.conn.logs.write([{"name": "stderr", "level": logging.WARNING, "message": text}], 0)

    async def _watch(self, exited: asyncio.Future[int]) -> None:
        assert self.link_task is not None
        waiters: set[asyncio.Future[Any]] = {exited, self.link_task}
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if exited not in done:  # a dying runner's socket closes first: its exit says why
            done, _ = await asyncio.wait({exited}, timeout=_EXIT_GRACE)
        if exited in done:
            reason = f"runner {self.runner} exited ({self._exit_reason(exited.result())})"
        else:
            reason = f"runner {self.runner}: link closed ({self.link.close_reason if self.link else '?'})"
        if not self.stopping and self.proc is not None:
            self.ref.tell(_Down(reason, self.proc))

    # ------------------------------------------------------------------ running

    async def receive(self, message: Any) -> Any:
        if isinstance(message, _Down):
            if message.proc is self.proc and not self.stopping:
                await self._fail(message.reason)
        elif isinstance(message, _Health):
            await self._health()
        elif isinstance(message, ReloadPlugin):
            return await self._reload(message.name)
        elif isinstance(message, PushConfig):
            return await self._push_config(message.name)
        else:
            raise TypeError(f"unexpected message {message!r}")
        return None

    async def _health(self) -> None:
        link = self.link
        try:
            if link is None:
                raise LinkClosed("no link")
            await link.call(Action.HEALTH, {}, timeout=self.settings.health_timeout)
        except LinkClosed:
            if link is None:
                await self._fail(f"runner {self.runner} failed its health check: no link")
            return  # the watcher reports a closed link, with the runner's exit status
        except (TimeoutError, RemoteError) as exc:
            await self._fail(f"runner {self.runner} failed its health check: {type(exc).__name__}: {exc}")
        self._arm_health()

    def _arm_health(self) -> None:
        with contextlib.suppress(ActorDeadError):  # stopping: no more checks are needed
            self.context.schedule_once(self.settings.health_interval, _Health(), key="health")

    async def _fail(self, reason: str) -> None:
        self.stopping = True  # what the watcher sees from here on is this failure
        self.hub.detach(self.runner, self.link, reason=reason)
        await self._kill()
        raise RunnerDown(reason)

    async def _reload(self, name: str) -> dict[str, Any]:
        entry = self.hub.plugins.get(name)
        if entry is None or self.link is None:
            raise LookupError(f"plugin {name!r} is not running")
        registration = await self.link.call(
            Action.RELOAD, {"spec": entry.spec.wire()}, timeout=self.settings.start_timeout
        )
        self.hub.registered(registration)
        log.info("plugin %s reloaded: %s", name, entry.status if not entry.error else entry.error)
        return entry.info()

    async def _push_config(self, name: str) -> dict[str, Any]:
        entry = self.hub.plugins.get(name)
        if entry is None or self.link is None:
            raise LookupError(f"plugin {name!r} is not running")
        result: dict[str, Any] = await self.link.call(
            Action.CONFIG_UPDATED,
            {"name": name, "config": entry.spec.config},
            timeout=self.settings.call_timeout,
        )
        if not result.get("ok"):
            problems = "; ".join(
                f"config.{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in result.get("problems", [])
            )
            log.error(
                "plugin %s: new config refused, keeping the old one: %s",
                name,
                problems or result.get("error"),
            )
        return result

    # ------------------------------------------------------------------ stop

    async def on_stop(self) -> None:
        self.stopping = True
        self.hub.detach(self.runner, self.link, reason="stopped")
        proc = self.proc
        try:
            if proc is not None and proc.returncode is None:
                await self._stop_in_stages(proc)
            await self._kill()
        finally:
            if proc is not None:  # the stop was cut short (cancelled): kill and remove, not waiting
                proc.abandon()
        for task in self.tasks:
            task.cancel()
        if self.link is not None:
            self.link.close("runner host stopped")
        if self.server is not None:
            self.server.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def _stop_in_stages(self, proc: RunnerProcess) -> None:
        timeout = self.settings.stop_timeout
        link = self.link
        if link is not None and not link.closed:
            with contextlib.suppress(TimeoutError, LinkClosed, RemoteError):
                await link.call(Action.PREPARE_SHUTDOWN, {"timeout": timeout}, timeout=timeout + 1.0)
            with contextlib.suppress(TimeoutError, LinkClosed, RemoteError):
                await link.call(Action.SHUTDOWN, {}, timeout=timeout)
        for sig in (None, signal.SIGTERM):
            if sig is not None and proc.returncode is None:
                log.warning("plugin runner %s did not stop; sending %s", self.runner, sig.name)
                await proc.signal(sig)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await proc.wait()
            if proc.returncode is not None:
                return

    async def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            await proc.signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await proc.wait()
        await proc.release()

    def _exit_reason(self, code: int) -> str:
        return self.proc.exit_reason(code) if self.proc is not None else f"exit code {code}"
