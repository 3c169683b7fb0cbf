"""Plugin runners inside sandbox containers (``isolation: container``), and the
one interface ``RunnerHost`` drives a runner through, a process or a container.

An untrusted plugin's runner runs in a container made exactly like a sandbox
session's (``DockerBackend.container_options`` with the plugin's
``sandbox_profile``: no network unless the profile asks, read-only root with
size-limited tmpfs at /workspace and /tmp, a non-root user, every capability
dropped, no-new-privileges, memory/CPU/pids limits) and reaches the engine only
through its runner socket, whose directory is bind-mounted with the one-time
token in a file (not in the container's environment, which ``inspect`` shows;
the host deletes the file when the runner connects, having read it).

The code it runs is bind-mounted read-only at the same paths as on this machine,
so paths need no translation: the callboard package with the rooms the runner
imports, the engine's site-packages (put on ``PYTHONPATH``; ``-S`` keeps their
``.pth`` files out), and each plugin's folder. The image's python3 runs that code,
so it must be the engine's Python version: a few lines checked before anything
is imported exit with ``EXIT_PYTHON_MISMATCH`` and say which versions differ.
Reusing the engine's installation rather than installing into the image keeps one
copy of the code and no network at build time; the price is that the image must
match the engine's Python minor version and libc (the debootstrap image built from
this machine's own Debian does).

Containers carry ``callboard.plugin.*`` labels (not the sandbox's
``callboard.fleet``, whose orphan sweep would remove them) naming the engine that
started them; ``sweep_strays`` removes those an engine of this machine left when
it died (a runner whose engine died exits when its socket closes, so its
container stops by itself; the sweep removes the stopped container).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import docker.types
import requests

from callboard.engine.plugin_protocol import ENV_TOKEN_FILE, EXIT_OUT_OF_MEMORY
from callboard.engine.sandbox_api import WORKSPACE, SandboxError, SandboxUnavailable
from callboard.handlers.plugin.config import PluginSpec
from callboard.sandbox.backend import SessionSpec
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.engine import EngineEndpoint, connect, off_reason, resolve_endpoint

log = logging.getLogger("callboard.plugins")

LABEL_FLEET = "callboard.plugin.fleet"
LABEL_RUNNER = "callboard.plugin.runner"
#: ``host:pid`` of the engine that started the container
LABEL_OWNER = "callboard.plugin.owner"
#: the image's python3 is not the engine's version
EXIT_PYTHON_MISMATCH = 87
#: the rooms of the callboard package the runner imports (a test checks it against the runner)
RUNNER_ROOMS = ("engine", "plugin")
TOKEN_FILE = "token"

_BOOT = """\
import os, runpy, signal, sys
if sys.version_info[:2] != ({major}, {minor}):
    found = "%d.%d" % sys.version_info[:2]
    sys.stderr.write(f"the image's python3 is {{found}}; the runner needs the engine's {major}.{minor}\\n")
    sys.exit({code})
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))  # PID 1 ignores it otherwise
runpy.run_module("callboard.plugin.runner", run_name="__main__", alter_sys=True)
"""


class RunnerProcess(Protocol):
    """What ``RunnerHost`` needs of a runner: a host process or a container."""

    stdout: asyncio.StreamReader

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    async def signal(self, sig: signal.Signals) -> None:
        """Deliver ``sig`` unless it is gone already."""

    async def release(self) -> None:
        """After it exited: free what it held (a container is removed)."""

    def abandon(self) -> None:
        """Unless it was released: kill it and free what it held without waiting (a
        stop that is cut short must not leave it running)."""

    def exit_reason(self, code: int) -> str: ...


class HostProcess:
    """A runner process of this machine (``isolation: process``)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.stdout = proc.stdout

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int:
        return await self.proc.wait()

    async def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def release(self) -> None:
        pass

    def abandon(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def exit_reason(self, code: int) -> str:
        return exit_reason(code)


def exit_reason(code: int) -> str:
    if code == EXIT_OUT_OF_MEMORY:
        return "out of memory: its memory limit was reached"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@dataclass(frozen=True)
class PluginContainers:
    """Where this fleet's container runners go: its sandbox settings, and the owner
    label that tells this engine's containers from a dead one's."""

    fleet: str
    settings: SandboxSettings
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def endpoint(self) -> EngineEndpoint:
        endpoint = resolve_endpoint(self.settings)
        if endpoint is None:
            raise SandboxUnavailable(off_reason(self.settings))
        if endpoint.unix_socket is None:
            raise SandboxUnavailable(
                f"container runners mount this machine's files: they need a local engine "
                f"(a unix socket), not {endpoint.display}"
            )
        return endpoint


def code_mounts(specs: list[PluginSpec]) -> list[str]:
    """Host directories a container runner needs, read-only: the callboard package and
    the rooms the runner imports, site-packages, and the plugins' folders."""
    package = _package_dir()
    wanted = [package, *((package / room).resolve() for room in RUNNER_ROOMS)]
    wanted += [Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")]
    for spec in specs:
        wanted.append(spec.root.resolve())
        if spec.package is not None:  # every package of the dotted name, where it really lives
            parts = spec.package.split(".")
            for depth in range(1, len(parts)):
                found = importlib.util.find_spec(".".join(parts[:depth]))
                wanted += [Path(p).resolve() for p in (found and found.submodule_search_locations) or []]
    chosen: list[Path] = []
    for path in sorted(set(wanted), key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(outer) for outer in chosen):
            chosen.append(path)
    return [str(p) for p in chosen]


def _package_dir() -> Path:
    """The callboard package's folder (its rooms may be symlinks to elsewhere)."""
    return Path(sys.modules["callboard"].__file__ or "").parent


def python_path(specs: list[PluginSpec]) -> str:
    """Where the runner's imports come from: the package's parent, site-packages, and the
    parent of each installed plugin's top-level package."""
    paths = [str(_package_dir().parent)]
    paths += [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    for spec in specs:
        if spec.package is not None:
            top = importlib.util.find_spec(spec.package.split(".")[0])
            for location in (top and top.submodule_search_locations) or []:
                paths.append(str(Path(location).parent))
    return ":".join(dict.fromkeys(paths))


class ContainerProcess:
    """A runner in a sandbox container. Engine API calls run in threads; one daemon
    thread follows the container's output, then its exit code."""

    def __init__(self, containers: PluginContainers, runner: str, directory: str) -> None:
        self.containers = containers
        self.runner = runner
        self.directory = directory
        self.name = f"callboard-plugin-{containers.fleet}-{runner}"
        self.stdout = asyncio.StreamReader()
        self.container_id = ""
        self._pid = 0
        self._returncode: int | None = None
        self._oom = False
        self._sent: set[int] = set()  # the signals the engine sent it
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._endpoint = containers.endpoint()
        self._backend: DockerBackend | None = None
        self._released = False

    @classmethod
    async def start(
        cls,
        containers: PluginContainers,
        runner: str,
        specs: list[PluginSpec],
        env: dict[str, str],
        socket_path: str,
        token: str,
    ) -> ContainerProcess:
        """Create and start the runner's container (``SandboxUnavailable``/``SandboxError``
        say why not: no engine, no image, a bad profile). ``token`` goes in a file of the
        socket's directory, handed to the container's user with the socket."""
        directory = os.path.dirname(socket_path)
        self = cls(containers, runner, directory)
        creating = asyncio.ensure_future(asyncio.to_thread(self._create, specs, env, socket_path, token))
        try:
            await asyncio.shield(creating)
        except BaseException:
            await asyncio.wait([creating])  # cancelled: the thread goes on; remove what it makes
            await self.release()
            raise
        threading.Thread(
            target=self._follow, args=(asyncio.get_running_loop(),), name=f"plugin-{runner}", daemon=True
        ).start()
        return self

    def _create(self, specs: list[PluginSpec], env: dict[str, str], socket_path: str, token: str) -> None:
        settings = self.containers.settings
        profile = settings.profiles[specs[0].sandbox_profile]
        self._backend = backend = DockerBackend(self._endpoint, settings)
        spec = SessionSpec(
            fleet=self.containers.fleet,
            session=f"plugin-{self.runner}",
            instance=self.containers.owner,
            image=profile.image or settings.image,
            profile=profile,
            network=profile.network,
        )
        options = backend.container_options(spec)  # the sandbox's hardening, unchanged
        user = self._hand_over(profile.user, socket_path, token)
        boot = _BOOT.format(major=sys.version_info[0], minor=sys.version_info[1], code=EXIT_PYTHON_MISMATCH)
        readonly = [*code_mounts(specs), self.directory]
        options.update(
            command=["python3", "-S", "-c", boot],
            name=self.name,
            hostname="plugin",
            labels={
                LABEL_FLEET: self.containers.fleet,
                LABEL_RUNNER: self.runner,
                LABEL_OWNER: self.containers.owner,
            },
            user=user,
            working_dir=WORKSPACE,
            environment={
                **env,
                ENV_TOKEN_FILE: os.path.join(self.directory, TOKEN_FILE),
                "PYTHONPATH": python_path(specs),
                "PYTHONDONTWRITEBYTECODE": "1",
                "HOME": WORKSPACE,
                "TMPDIR": "/tmp",
                "LANG": "C.UTF-8",
            },
            mounts=[
                *options["mounts"],
                *(docker.types.Mount(target=p, source=p, type="bind", read_only=True) for p in readonly),
            ],
        )
        client = backend.client
        with backend.errors(f"creating plugin container {self.name}"):
            try:
                container = client.containers.create(**options)
            except docker.errors.APIError as error:
                if error.status_code != 409:
                    raise
                backend.remove_container(self.name)  # left by this runner's previous start
                container = client.containers.create(**options)
            self.container_id = str(container.id)
            container.start()
            state = client.api.inspect_container(self.container_id).get("State") or {}
        self._pid = int(state.get("Pid") or 0)

    def _hand_over(self, user: str, socket_path: str, token: str) -> str:
        """The container's user, and the socket and token file made usable by it alone."""
        token_path = os.path.join(self.directory, TOKEN_FILE)
        descriptor = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(descriptor, "w") as file:
            file.write(token)
        if os.geteuid() != 0:  # cannot give files away: the container runs as the engine's user
            return f"{os.getuid()}:{os.getgid()}"
        uid, _, gid = user.partition(":")
        for path in (self.directory, socket_path, token_path):
            os.chown(path, int(uid), int(gid or uid))
        return user

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        code = -int(signal.SIGKILL)
        try:
            client = connect(self._endpoint, self.containers.settings)
        except docker.errors.DockerException as error:
            log.warning("plugin container %s: cannot follow it: %s", self.name, error)
        else:
            try:
                with contextlib.suppress(docker.errors.DockerException, requests.RequestException, OSError):
                    for chunk in client.api.logs(
                        self.container_id, stdout=True, stderr=True, stream=True, follow=True
                    ):
                        _soon(loop, self.stdout.feed_data, chunk)
                code = self._exit_code(client)
            finally:
                client.close()
        _soon(loop, self.stdout.feed_eof)
        _soon(loop, self._set_exited, code)

    def _exit_code(self, client: docker.DockerClient) -> int:
        """The exit status, as a process's: a signal as its negative number."""
        while not self._released:
            try:
                status = int(client.api.wait(self.container_id, timeout=60).get("StatusCode", -9))
                state = client.api.inspect_container(self.container_id).get("State") or {}
            except (requests.RequestException, docker.errors.APIError) as error:
                if isinstance(error, docker.errors.NotFound):
                    break
                continue  # still running past the read timeout
            self._oom = bool(state.get("OOMKilled"))
            return -(status - 128) if 128 < status < 160 else status
        return -int(signal.SIGKILL)

    def _set_exited(self, code: int) -> None:
        if not self._exited.done():
            self._returncode = code
            self._exited.set_result(code)

    @property
    def pid(self) -> int:
        """The runner's pid on this machine (what ``GET /api/plugins`` shows)."""
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    async def signal(self, sig: signal.Signals) -> None:
        backend = self._backend
        if backend is None or self._returncode is not None:
            return
        self._sent.add(int(sig))
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException, OSError):
            await asyncio.to_thread(backend.client.api.kill, self.container_id, int(sig))

    async def release(self) -> None:
        """Remove the container (its follower then ends); idempotent."""
        if self._released:
            return
        self._released = True
        if self._backend is not None:
            await asyncio.shield(asyncio.to_thread(_remove, self._backend, self.container_id or self.name))

    def abandon(self) -> None:
        if self._released:
            return
        self._released = True
        backend = self._backend
        if backend is not None:
            ref = self.container_id or self.name
            threading.Thread(target=_remove, args=(backend, ref), daemon=True).start()

    def exit_reason(self, code: int) -> str:
        if code == EXIT_PYTHON_MISMATCH:
            return "its image's python3 is not the engine's Python version (see the runner's log)"
        if code == 127:
            return "its image has no python3"
        if self._oom:
            return "out of memory: its container's memory limit was reached"
        if code == -signal.SIGKILL and signal.SIGKILL not in self._sent:  # Podman may not say OOMKilled
            return "killed by SIGKILL, not by the engine: most likely out of memory (its container's limit)"
        return exit_reason(code)


def _remove(backend: DockerBackend, ref: str) -> None:
    try:
        backend.remove_container(ref)
    except SandboxError as error:
        log.warning("plugin container %s: not removed: %s", ref, error)
    finally:
        backend.close()


def _soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
        loop.call_soon_threadsafe(callback, *args)


def sweep_strays(containers: PluginContainers) -> list[str]:
    """Remove plugin containers of this fleet that an engine of this machine, now dead,
    left behind (blocking; run it in a thread). The names removed."""
    host, _, _ = containers.owner.rpartition(":")
    backend = DockerBackend(containers.endpoint(), containers.settings)
    removed = []
    try:
        with backend.errors("listing plugin containers"):
            found = backend.client.api.containers(
                all=True, filters={"label": [f"{LABEL_FLEET}={containers.fleet}"]}
            )
        for item in found:
            owner_host, _, pid = str((item.get("Labels") or {}).get(LABEL_OWNER, "")).rpartition(":")
            if owner_host != host or not pid.isdigit() or _alive(int(pid)):
                continue
            name = (item.get("Names") or [item["Id"]])[0].lstrip("/")
            if backend.remove_container(item["Id"]):
                removed.append(name)
    finally:
        backend.close()
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
