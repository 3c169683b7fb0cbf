"""The runner process: ``python -m callboard.plugin.runner``, started by the host.

It connects to the host's Unix socket, proves itself with the one-time token
from its environment (then removes it, so plugin code never sees it), loads
the plugins the host names, reports their listeners, and serves events until
the host tells it to stop or goes away. It never outlives the engine: it asks
the kernel for SIGKILL when its parent dies (Linux), and it exits when the
socket closes. A memory limit (RLIMIT_AS) makes a leaking plugin fail here,
not in the engine; running out of memory exits the runner with
``EXIT_OUT_OF_MEMORY`` so the host restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import resource
import signal
import sys
import types
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from callboard.engine.events import decode_event
from callboard.engine.plugin_protocol import (
    ENV_MEMORY,
    ENV_PARENT,
    ENV_RUNNER,
    ENV_SOCKET,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    EXIT_OUT_OF_MEMORY,
    PROTOCOL_VERSION,
    Action,
    Code,
    Link,
    RemoteError,
    command_args,
)
from callboard.plugin.context import Context
from callboard.plugin.logs import ForwardingLogHandler
from callboard.plugin.plugin import Plugin

PR_SET_PDEATHSIG = 1
PLUGINS_PACKAGE = "_callboard_plugins"
log = logging.getLogger("plugin.runner")


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when the engine dies, even by kill -9 (Linux only;
    elsewhere the closed socket ends the runner)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent and os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed


def limit_memory(limit: int) -> None:
    if limit > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def out_of_memory(where: str) -> None:
    os.write(2, f"runner out of memory ({where}); exiting\n".encode())
    os._exit(EXIT_OUT_OF_MEMORY)


class LoadedPlugin:
    def __init__(self, name: str, package: str, instance: Plugin) -> None:
        self.name = name
        self.package = package
        self.instance = instance
        self.listeners = {
            lid: (info, getattr(instance, attr)) for lid, (info, attr) in type(instance).listeners().items()
        }

    def registration(self) -> dict[str, Any]:
        return {"name": self.name, "listeners": [info.model_dump() for info, _ in self.listeners.values()]}


class LoadError(Exception):
    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class _CallHost:
    """A context's calls, as ``call`` requests on the link, tagged with the dispatch."""

    def __init__(self, link: Link, dispatch: int, timeout: float) -> None:
        self.link = link
        self.dispatch = dispatch
        self.timeout = timeout

    async def call(self, op: str, data: dict[str, Any]) -> Any:
        return await self.link.call(Action.CALL, {"ctx": self.dispatch, "op": op, **data}, self.timeout)


class Runner:
    def __init__(self, socket_path: str, token: str, name: str) -> None:
        self.socket_path = socket_path
        self.token = token
        self.name = name
        self.plugins: dict[str, LoadedPlugin] = {}
        self.specs: dict[str, dict[str, Any]] = {}
        self.call_timeout = 30.0
        self.accepting = True
        self.inflight: set[asyncio.Task[Any]] = set()
        self.stopped = asyncio.Event()
        self.logs = ForwardingLogHandler()
        self.link: Link | None = None

    async def run(self) -> int:
        reader, writer = await asyncio.open_unix_connection(self.socket_path)
        link = self.link = Link(reader, writer, self.on_request)
        reading = asyncio.ensure_future(link.run())
        try:
            hello = await link.call(
                Action.HELLO,
                {"token": self.token, "pid": os.getpid(), "runner": self.name, "protocol": PROTOCOL_VERSION},
                timeout=30,
            )
        except RemoteError as exc:
            print(f"runner {self.name}: the host refused the handshake: {exc}", file=sys.stderr)
            return 2
        self.token = ""
        settings = hello.get("settings", {})
        self.call_timeout = float(settings.get("call_timeout", 30.0))
        self.logs = ForwardingLogHandler(
            queue=int(settings.get("log_queue", 1000)),
            batch=int(settings.get("log_batch", 100)),
            interval=float(settings.get("log_interval", 0.2)),
        )
        root = logging.getLogger()
        root.handlers = [self.logs]
        root.setLevel(int(settings.get("log_level", logging.INFO)))
        self.logs.start(link)
        registrations = [await self.load(spec) for spec in hello.get("plugins", [])]
        await link.call(Action.READY, {"plugins": registrations}, timeout=30)
        done, _ = await asyncio.wait(
            [reading, asyncio.ensure_future(self.stopped.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if reading in done and not self.stopped.is_set():
            print(f"runner {self.name}: the host went away ({link.close_reason}); exiting", file=sys.stderr)
        await self.unload_all()
        logging.getLogger().removeHandler(self.logs)
        await self.logs.stop()
        with contextlib.suppress(Exception):
            await link.drain()
        link.close("runner stopped")
        reading.cancel()
        return 0

    # ------------------------------------------------------------------ plugins

    async def load(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec["name"]
        self.specs[name] = spec
        try:
            loaded = await self._load(spec)
        except MemoryError:
            out_of_memory(f"loading {name}")
            raise
        except LoadError as exc:
            logging.getLogger(f"plugin.{name}").error("not loaded: %s", exc)
            return {"name": name, "error": str(exc), "problems": exc.problems}
        except Exception as exc:
            logging.getLogger(f"plugin.{name}").exception("not loaded")
            return {"name": name, "error": f"{type(exc).__name__}: {exc}", "problems": []}
        self.plugins[name] = loaded
        return loaded.registration()

    async def _load(self, spec: dict[str, Any]) -> LoadedPlugin:
        name = spec["name"]
        cls = load_class(spec)
        config = validate_config(cls, spec.get("config") or {})
        self.logs.secrets.update(s for s in secrets_of(config) if len(s) >= 4)
        instance = cls()
        instance.name = name
        instance.config = config
        instance.log = logging.getLogger(f"plugin.{name}")
        await instance.on_load()
        return LoadedPlugin(name, _package_for(spec), instance)

    async def unload(self, name: str) -> None:
        loaded = self.plugins.pop(name, None)
        if loaded is None:
            return
        try:
            await loaded.instance.on_unload()
        except Exception:
            loaded.instance.log.exception("on_unload failed")
        _forget_modules(loaded.package)

    async def unload_all(self) -> None:
        for name in list(self.plugins):
            await self.unload(name)

    # ------------------------------------------------------------------ requests from the host

    async def on_request(self, action: str, data: dict[str, Any]) -> Any:
        if action == Action.EMIT_EVENT:
            if not self.accepting:
                raise RemoteError(Code.UNAVAILABLE, "the runner is shutting down")
            task = asyncio.current_task()
            assert task is not None
            self.inflight.add(task)
            try:
                return await self.emit(data)
            finally:
                self.inflight.discard(task)
        if action == Action.HEALTH:
            return {
                "ok": True,
                "pid": os.getpid(),
                "inflight": len(self.inflight),
                "plugins": sorted(self.plugins),
            }
        if action == Action.RELOAD:
            name = data["spec"]["name"]
            await self.unload(name)
            return await self.load(data["spec"])
        if action == Action.CONFIG_UPDATED:
            return await self.config_updated(data["name"], data.get("config") or {})
        if action == Action.PREPARE_SHUTDOWN:
            self.accepting = False
            if self.inflight:
                await asyncio.wait(set(self.inflight), timeout=float(data.get("timeout", 5.0)))
            return {"inflight": len(self.inflight)}
        if action == Action.SHUTDOWN:
            asyncio.get_running_loop().call_soon(self.stopped.set)  # after the answer is written
            return {"ok": True}
        raise RemoteError(Code.UNKNOWN, f"unknown action {action!r}")

    async def emit(self, data: dict[str, Any]) -> dict[str, Any]:
        name = data["plugin"]
        loaded = self.plugins.get(name)
        if loaded is None:
            raise RemoteError(Code.UNKNOWN, f"plugin {name!r} is not loaded in runner {self.name!r}")
        assert self.link is not None
        events = [decode_event(e) for e in data["events"]]
        ctx = Context(
            host=_CallHost(self.link, int(data["ctx"]), self.call_timeout),
            plugin=name,
            events=events,
            bot_id=str(data["bot_id"]),
            session=tuple(data["session"]),
            log=loaded.instance.log,
            replayed=bool(data.get("replayed")),
        )
        failed: list[dict[str, str]] = []
        try:
            async with asyncio.timeout(float(data["deadline"])):
                for listener_id in data["listeners"]:
                    entry = loaded.listeners.get(listener_id)
                    if entry is None:
                        failed.append({"listener": listener_id, "error": "no such listener"})
                        continue
                    info, fn = entry
                    ctx.args = command_args(info.command, ctx.text) if info.command else None
                    try:
                        await fn(ctx)
                    except MemoryError:
                        out_of_memory(f"{name}.{listener_id}")
                    except Exception as exc:
                        loaded.instance.log.exception("listener %s failed", listener_id)
                        failed.append(
                            {"listener": listener_id, "error": f"{type(exc).__name__}: {exc}"[:500]}
                        )
                    if ctx.postorder_prevented:
                        break
        except TimeoutError:
            raise RemoteError(
                Code.TIMEOUT, f"{name}: listeners missed their {data['deadline']}s deadline"
            ) from None
        return {
            "prevent_postorder": ctx.postorder_prevented,
            "prevent_default": ctx.default_prevented,
            "state": ctx.state_loaded,
            "failed": failed,
        }

    async def config_updated(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        loaded = self.plugins.get(name)
        if loaded is None:
            raise RemoteError(Code.UNKNOWN, f"plugin {name!r} is not loaded")
        try:
            config = validate_config(type(loaded.instance), values)
        except LoadError as exc:
            return {"ok": False, "error": str(exc), "problems": exc.problems}
        self.logs.secrets.update(s for s in secrets_of(config) if len(s) >= 4)
        await loaded.instance.on_config(config)
        self.specs[name] = {**self.specs[name], "config": values}
        return {"ok": True}


def load_class(spec: dict[str, Any]) -> type[Plugin]:
    """Import the plugin's entry class (its folder mounted as a package)."""
    module_name, _, class_name = spec["entry"].partition(":")
    module = importlib.import_module(f"{_package_for(spec)}.{module_name}")
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise LoadError(f"{spec['entry']} is not a callboard.plugin.Plugin subclass")
    return cls


def validate_config(cls: type[Plugin], values: dict[str, Any]) -> Any:
    if cls.Config is None:
        if values:
            raise LoadError(
                "this plugin takes no config", [{"loc": [], "msg": "this plugin takes no config"}]
            )
        return None
    try:
        return cls.Config.model_validate(values)
    except ValidationError as exc:
        problems = [
            {"loc": list(e["loc"]), "msg": "unknown key" if e["type"] == "extra_forbidden" else e["msg"]}
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise LoadError("invalid config", problems) from None


def secrets_of(value: Any) -> list[str]:
    """Every ``SecretStr`` value in a plugin's config, to mask in its log lines."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return [s for field in type(value).model_fields for s in secrets_of(getattr(value, field))]
    if isinstance(value, dict):
        return [s for item in value.values() for s in secrets_of(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in secrets_of(item)]
    return []


def _package_for(spec: dict[str, Any]) -> str:
    """The package the plugin's entry module lives in: its folder, mounted under
    ``_callboard_plugins.<name>``, or the installed package it names."""
    if spec.get("package"):
        return str(spec["package"])
    root = sys.modules.get(PLUGINS_PACKAGE)
    if root is None:
        root = types.ModuleType(PLUGINS_PACKAGE)
        root.__path__ = []
        sys.modules[PLUGINS_PACKAGE] = root
    package = f"{PLUGINS_PACKAGE}.{spec['name'].replace('-', '_')}"
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [str(spec["path"])]
        sys.modules[package] = module
    return package


def _forget_modules(package: str) -> None:
    """Drop the plugin's modules, so a reload imports its files afresh."""
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _token_file(path: str) -> str:
    """The token a container runner finds in its socket directory (the host removes the file
    when this runner connects, before any plugin code runs, so plugin code cannot read it)."""
    if not path:
        return ""
    with open(path, encoding="ascii") as file:
        return file.read().strip()


def main() -> int:
    die_with_parent(int(os.environ.get(ENV_PARENT, "0")))
    limit_memory(int(os.environ.get(ENV_MEMORY, "0")))
    token = os.environ.pop(ENV_TOKEN, "") or _token_file(os.environ.pop(ENV_TOKEN_FILE, ""))
    runner = Runner(os.environ[ENV_SOCKET], token, os.environ.get(ENV_RUNNER, "runner"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the engine's to handle
    try:
        import uvloop

        return uvloop.run(runner.run())
    except ImportError:
        return asyncio.run(runner.run())


if __name__ == "__main__":
    sys.exit(main())
