"""The backend on the Docker Engine API (the ``docker`` SDK): Docker, or Podman's compatible socket.

Every container is hardened by default: no network unless the profile asks,
read-only root with size-limited tmpfs at ``/workspace`` and ``/tmp``, a
non-root user, all capabilities dropped, ``no-new-privileges``, memory (no
swap), CPU and pids limits, and the ``callboard.*`` labels the orphan sweep
relies on. PID 1 is a tiny shell loop, running as a user of its own, that
reaps orphaned processes, so a killed process tree leaves no zombies behind to
eat the pids limit.

Commands and file operations go through a resident agent in the container
(``sandbox/agent.py``: one exec per container, not one per command, so a warm command
costs one round trip and Podman keeps no ``conmon`` pair per command). The agent kills a
timed-out command's process group and nothing else. Only when the agent itself is lost,
or the image has no python3 and commands run as their own execs, is a timed-out command
killed with everything else the sandbox user runs (``kill -9 -1`` from inside, which
spares PID 1). If that kill cannot run, the session is marked unhealthy and replaced.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import docker.types
import requests

from callboard.engine.sandbox_api import WORKSPACE, ExecResult, SandboxError, SandboxUnavailable
from callboard.sandbox.agent_link import AGENT_SOURCE, AgentGone, AgentLink
from callboard.sandbox.backend import (
    HELPER_SOURCE,
    LABEL_FLEET,
    LABEL_INSTANCE,
    LABEL_SESSION,
    LABEL_TENANT,
    ContainerRecord,
    EngineInfo,
    ExecRequest,
    Meter,
    SandboxBackend,
    SandboxSession,
    SessionSpec,
    WorkspaceQuota,
    helper_timeout,
)
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.engine import EngineEndpoint, connect, redact
from callboard.sandbox.mounts import MountRefused, check_source, engine_sockets, pin
from callboard.sandbox.output import StreamCapture
from callboard.sandbox.process_link import PROCESS_AGENT_SOURCE, ProcessLink
from callboard.sandbox.stream import ExecStream, raw_socket
from callboard.sandbox.workspaces import (
    WorkspaceError,
    ensure_volume,
    list_volumes,
    probe_loop,
    prune,
    usage,
)

log = logging.getLogger("callboard.sandbox")

#: PID 1: reaps every orphan (``wait`` collects any child) and ignores signals it has no trap for.
#: It runs as IDLE_USER, not as the commands' user, so neither ``kill -9 -1`` nor untrusted code
#: can signal it or its ``sleep``; it never needs to fork again, even when a fork bomb holds
#: every pid (a shell that cannot fork exits, and with PID 1 the container would go).
IDLE_COMMAND = ["/bin/sh", "-c", "while :; do sleep 2147483647 & wait; done"]
IDLE_USER = "65534:65534"
#: Runs every command: enter the working directory, then become the command.
_ENTER = 'cd "$1" || exit 126; shift; exec "$@"'
_KILL_ALL = ["/bin/sh", "-c", "kill -9 -1 2>/dev/null; exit 0"]
_KILL_GRACE = 5.0


class DockerBackend(SandboxBackend):
    """One ``docker.DockerClient``; create one backend per thread."""

    def __init__(self, endpoint: EngineEndpoint, settings: SandboxSettings) -> None:
        self.endpoint = endpoint
        self.settings = settings
        with self.errors():
            self.client = connect(endpoint, settings)

    @contextlib.contextmanager
    def errors(self, what: str = "") -> Iterator[None]:
        """Turn SDK and transport failures into ``SandboxUnavailable`` with a clear reason."""
        try:
            yield
        except SandboxError:
            raise
        except docker.errors.ImageNotFound as error:
            raise SandboxUnavailable(
                f"sandbox image not found on the engine ({_explain(error)}): "
                "build it with `callboard sandbox build-image`"
            ) from None
        except docker.errors.NotFound as error:
            raise SandboxUnavailable(f"{what or 'sandbox container'} is gone: {_explain(error)}") from None
        except docker.errors.APIError as error:
            raise SandboxUnavailable(
                f"container engine refused {what or 'a request'}: {_explain(error)}"
            ) from None
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as error:
            raise SandboxUnavailable(
                f"container engine {self.endpoint.display} is unreachable: {_short(error)}"
            ) from None

    def ping(self) -> EngineInfo:
        with self.errors("ping"):
            version = self.client.version()
        product = next((c.get("Name", "") for c in version.get("Components", [])), "") or "Docker Engine"
        return EngineInfo(
            endpoint=self.endpoint.display,
            product=str(product),
            version=str(version.get("Version", "?")),
            api_version=str(version.get("ApiVersion", "?")),
        )

    def container_options(self, spec: SessionSpec) -> dict[str, Any]:
        """``containers.create`` arguments: the hardening lives here."""
        profile = spec.profile
        mounts = [
            docker.types.Mount(
                target=mount.target,
                source=self._checked_source(mount.source),
                type="bind",
                read_only=mount.read_only,
            )
            for mount in profile.all_mounts()
        ]
        tmpfs = {
            WORKSPACE: f"rw,nosuid,nodev,size={profile.workspace_size},mode=1777",
            "/tmp": f"rw,nosuid,nodev,size={profile.tmp_size},mode=1777",
        }
        if spec.workspace_volume is not None:
            del tmpfs[WORKSPACE]
            mounts.insert(
                0, docker.types.Mount(target=WORKSPACE, source=spec.workspace_volume, type="volume")
            )
        return {
            "image": spec.image,
            "command": IDLE_COMMAND,
            "name": spec.container_name,
            "hostname": "sandbox",
            "labels": spec.labels,
            "user": IDLE_USER,
            "working_dir": WORKSPACE,
            "environment": {"HOME": WORKSPACE, "TMPDIR": "/tmp", "LANG": "C.UTF-8"},
            "network_mode": None if spec.network else "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": profile.memory,
            "memswap_limit": profile.memory,
            "nano_cpus": int(profile.cpus * 1e9),
            "pids_limit": profile.pids,
            "tmpfs": tmpfs,
            "mounts": mounts,
            "detach": True,
        }

    def _checked_source(self, source: str) -> str:
        """Second check of a host mount, on the path as it resolves now."""
        if self.endpoint.unix_socket is None:
            raise SandboxError(
                f"host mount {source!r} refused: mounts need a local engine (unix socket), "
                f"not {self.endpoint.display}"
            )
        try:
            return check_source(
                source,
                self.settings.allowed_mount_roots,
                [*engine_sockets(self.settings.engine_url), self.endpoint.unix_socket],
            )
        except MountRefused as error:
            raise SandboxError(str(error)) from None

    def create_session(self, spec: SessionSpec) -> DockerSession:
        options = self.container_options(spec)
        pins = [(m["Source"], pin(m["Source"])) for m in options["mounts"] if m["Type"] == "bind"]
        quota = "tmpfs"
        volume = spec.workspace_volume
        if volume is not None:
            with self.errors(f"workspace volume {volume}"), _image_errors(volume):
                quota = ensure_volume(
                    self.client,
                    volume,
                    spec.fleet,
                    spec.tenant,
                    spec.profile.workspace_size,
                    spec.workspace_images,
                    spec.profile.user if ":" in spec.profile.user else f"{spec.profile.user}:0",
                )
        with self.errors(f"creating sandbox {spec.container_name}"):
            try:
                container = self.client.containers.create(**options)
            except docker.errors.APIError as error:
                if error.status_code != 409:
                    raise
                # a container left by this session's previous incarnation: replace it
                self.remove_container(spec.container_name)
                container = self.client.containers.create(**options)
            container_id = container.id
            if container_id is None:  # the Engine API answers a create with the new id
                raise SandboxError(f"creating sandbox {spec.container_name}: the engine returned no id")
            try:
                container.start()
            except BaseException:
                with contextlib.suppress(SandboxError):
                    self.remove_container(container_id)
                raise
        self._verify_pins(pins, spec)
        log.debug("sandbox %s started (%s)", spec.container_name, container_id[:12])
        session = DockerSession(self, spec, container_id)
        if quota == "measured":
            session.measured_quota = spec.profile.workspace_size
        return session

    def _verify_pins(self, pins: list[tuple[str, tuple[int, int]]], spec: SessionSpec) -> None:
        """After start: each host mount is still the directory that was checked. The
        engine resolved the path string itself; if it was swapped meanwhile, the
        container may see something else, so it is removed."""
        for source, identity in pins:
            try:
                same = pin(source) == identity
            except MountRefused:
                same = False
            if not same:
                with contextlib.suppress(SandboxError):
                    self.remove_container(spec.container_name)
                raise SandboxError(f"host mount {source!r} changed while the sandbox was created; refused")

    def list_containers(self, fleet: str | None = None) -> list[ContainerRecord]:
        label = LABEL_FLEET if fleet is None else f"{LABEL_FLEET}={fleet}"
        with self.errors("listing sandbox containers"):
            found = self.client.api.containers(all=True, filters={"label": [label]})
        records = []
        for item in found:
            labels = item.get("Labels") or {}
            names = item.get("Names") or [item["Id"]]
            records.append(
                ContainerRecord(
                    id=item["Id"],
                    name=names[0].lstrip("/"),
                    fleet=labels.get(LABEL_FLEET, ""),
                    session=labels.get(LABEL_SESSION, ""),
                    instance=labels.get(LABEL_INSTANCE, ""),
                    state=str(item.get("State", "")),
                    tenant=labels.get(LABEL_TENANT),
                )
            )
        return records

    def probe_workspaces(self, image: str, directory: str | None, fleet: str) -> WorkspaceQuota:
        fallback = "; workspaces get the volume driver's size where it enforces one, else a measured quota"
        if directory is None:
            return WorkspaceQuota("measured", "no sandbox.workspace_dir for images" + fallback)
        if self.endpoint.unix_socket is None:
            why = f"the engine {self.endpoint.display} is remote: it cannot mount an image of this machine"
            return WorkspaceQuota("measured", why + fallback)
        with self.errors("probing loop-mounted workspaces"):
            refused = probe_loop(self.client, image, directory, fleet)
        if refused is not None:
            return WorkspaceQuota("measured", refused + fallback)
        return WorkspaceQuota("loop", f"an ext4 image per workspace in {directory}, loop-mounted")

    def meter(self, fleet: str, sessions: list[str], disk: bool) -> Meter:
        cpu: dict[str, float] = {}
        with self.errors("metering sandbox containers"):
            for session in sessions:
                try:
                    stats = self.client.api.stats(f"callboard-{fleet}-{session}", stream=False, one_shot=True)
                except docker.errors.NotFound:
                    continue  # not created yet, or gone
                total = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
                if isinstance(total, int | float):
                    cpu[session] = total / 1e9
            if not disk:
                return Meter(cpu)
            if self.endpoint.unix_socket is None:
                return Meter(cpu, {})  # a remote engine's volumes cannot be measured from here
            held: dict[str, int] = {}
            for volume in list_volumes(self.client, fleet):
                used = usage(volume) if volume.tenant is not None else None
                if volume.tenant is not None and used is not None:
                    held[volume.tenant] = held.get(volume.tenant, 0) + used
        return Meter(cpu, held)

    def prune_workspaces(self, fleet: str, older_than: float) -> list[str]:
        with self.errors("pruning workspaces"):
            removed, _ = prune(self.client, fleet, older_than)
        return removed

    def remove_container(self, ref: str) -> bool:
        with self.errors(f"removing {ref}"):
            try:
                self.client.api.remove_container(ref, force=True, v=True)
            except docker.errors.NotFound:
                return False
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


class DockerSession(SandboxSession):
    def __init__(self, backend: DockerBackend, spec: SessionSpec, container_id: str) -> None:
        super().__init__(spec)
        self.backend = backend
        self._id = container_id
        self._removed = False
        self._agent: AgentLink | None = None
        self._processes: ProcessLink | None = None
        #: the image has no python3 for the agent: every command is its own exec
        self._no_agent = False

    @property
    def container_id(self) -> str:
        return self._id

    def exec(self, request: ExecRequest) -> ExecResult:
        agent = self._agent_link()
        if agent is None:
            return self._exec_directly(request)
        stdout, stderr = StreamCapture(request.output_limit), StreamCapture(request.output_limit)
        started = time.monotonic()
        try:
            answer = agent.exec(
                request.argv,
                request.cwd,
                request.env,
                request.timeout,
                request.stdin,
                stdout,
                stderr,
                _KILL_GRACE,
            )
        except AgentGone as gone:
            return self._after_agent_loss(gone, stdout, stderr, started)
        if answer.get("survivors"):
            self.healthy = False
            log.warning("sandbox %s: processes survived a kill; replacing it", self.spec.container_name)
        code = answer.get("code")
        return _result(
            stdout, stderr, None if code is None else int(code), bool(answer["timed_out"]), started
        )

    def run_helper(self, op: str, request: dict[str, Any], payload: bytes) -> dict[str, Any]:
        agent = self._agent_link()
        if agent is None:
            return super().run_helper(op, request, payload)
        timeout = self.spec.profile.exec_timeout
        try:
            answer = agent.file(op, {"op": op, **request}, payload, timeout)
        except AgentGone as gone:
            self._agent = None
            self._require_running()
            raise SandboxError(f"{op} failed: the sandbox's agent was lost ({_short(gone)})") from None
        if answer.get("timed_out"):
            raise helper_timeout(op, timeout)
        reply: dict[str, Any] = answer["reply"]
        return reply

    def _agent_link(self) -> AgentLink | None:
        """The resident agent, started on first use and again after it was lost."""
        if self._no_agent:
            return None
        if self._agent is not None and self._agent.alive:
            return self._agent
        api = self.backend.client.api
        with self.backend.errors(f"sandbox {self.spec.container_name}"):
            exec_id = api.exec_create(
                self._id,
                ["python3", "-I", "-S", "-c", AGENT_SOURCE, HELPER_SOURCE],
                stdin=True,
                user=self.spec.profile.user,
                workdir=WORKSPACE,
            )["Id"]
            handle = api.exec_start(exec_id, socket=True)
        try:
            self._agent = AgentLink.attach(handle)
        except (AgentGone, TypeError) as error:
            _close_stream(handle, None)
            if self._exit_code(exec_id) == 127:
                self._no_agent = True
                log.info(
                    "sandbox %s: the image has no python3; each command runs as its own exec",
                    self.spec.container_name,
                )
                return None
            raise SandboxError(f"the sandbox's agent did not start: {_short(error)}") from None
        return self._agent

    def process_link(self) -> ProcessLink:
        """The process agent: one exec for every managed process of the container (and every
        restart of one), attached on first use and again after it was lost."""
        link = self._processes
        if link is not None and link.alive:
            return link
        self._require_running()
        api = self.backend.client.api
        with self.backend.errors(f"sandbox {self.spec.container_name}"):
            exec_id = api.exec_create(
                self._id,
                ["python3", "-I", "-S", "-c", PROCESS_AGENT_SOURCE],
                stdin=True,
                user=self.spec.profile.user,
                workdir=WORKSPACE,
            )["Id"]
            handle = api.exec_start(exec_id, socket=True)
        try:
            self._processes = ProcessLink.attach(handle)
        except (AgentGone, TypeError) as error:
            _close_stream(handle, None)
            raise SandboxError(f"the sandbox's process agent did not start: {_short(error)}") from None
        return self._processes

    def _after_agent_loss(
        self, gone: AgentGone, stdout: StreamCapture, stderr: StreamCapture, started: float
    ) -> ExecResult:
        """The agent died or hung mid-command (the command may have killed it): kill what is
        left from outside, report the command as killed, start a new agent next time."""
        self._agent = None
        self._require_running()
        log.info("sandbox %s: agent lost during a command: %s", self.spec.container_name, _short(gone))
        if not self._kill_all():
            self.healthy = False
        stderr.feed(b"\n[the sandbox's command runner was lost; the command was killed]\n")
        return _result(stdout, stderr, 137, False, started)

    def _require_running(self) -> None:
        """``SandboxUnavailable`` when the container was removed or stopped under us."""
        name = f"sandbox {self.spec.container_name}"
        with self.backend.errors(name):
            state = self.backend.client.api.inspect_container(self._id).get("State") or {}
        if not state.get("Running"):
            raise SandboxUnavailable(f"{name} is gone: the container is {state.get('Status', 'not running')}")

    def _exec_directly(self, request: ExecRequest) -> ExecResult:
        """One Engine API exec per command: for images without python3."""
        api = self.backend.client.api
        stdout, stderr = StreamCapture(request.output_limit), StreamCapture(request.output_limit)
        started = time.monotonic()
        with self.backend.errors(f"sandbox {self.spec.container_name}"):
            exec_id = api.exec_create(
                self._id,
                ["/bin/sh", "-c", _ENTER, "sandbox-exec", request.cwd, *request.argv],
                stdin=request.stdin is not None,
                environment=dict(request.env),
                user=self.spec.profile.user,
            )["Id"]
            handle = api.exec_start(exec_id, socket=True)
        try:
            sock, buffered = raw_socket(handle)
        except TypeError as error:
            _close_stream(handle, None)
            raise SandboxError(str(error)) from None
        stream = ExecStream(sock, stdout, stderr)
        try:
            stream.feed(buffered)
            finished = stream.pump(request.stdin, started + request.timeout)
            if not finished:
                killed = self._kill_all()
                drained = stream.pump(None, time.monotonic() + _KILL_GRACE) if killed else False
                if not drained:
                    self.healthy = False
                    log.warning(
                        "sandbox %s: processes survived a kill; replacing it", self.spec.container_name
                    )
        finally:
            _close_stream(handle, sock)
        exit_code = self._exit_code(exec_id) if finished else None
        return _result(stdout, stderr, exit_code, not finished, started)

    def _exit_code(self, exec_id: str) -> int | None:
        api = self.backend.client.api
        with self.backend.errors(f"sandbox {self.spec.container_name}"):
            for _ in range(40):
                info = api.exec_inspect(exec_id)
                if not info.get("Running") and info.get("ExitCode") is not None:
                    return int(info["ExitCode"])
                time.sleep(0.05)
        return None

    def _kill_all(self) -> bool:
        """Kill every process of the sandbox user but PID 1; True when the kill ran."""
        api = self.backend.client.api
        for attempt in range(3):
            try:
                exec_id = api.exec_create(self._id, _KILL_ALL, user=self.spec.profile.user)["Id"]
                api.exec_start(exec_id)
                if api.exec_inspect(exec_id).get("ExitCode") == 0:
                    return True
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as error:
                log.info(
                    "sandbox %s: kill attempt %d failed: %s", self.spec.container_name, attempt + 1, error
                )
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self._removed:
            return
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self._processes is not None:
            self._processes.close()
            self._processes = None
        self.backend.remove_container(self._id)
        self._removed = True
        log.debug("sandbox %s removed", self.spec.container_name)


@contextlib.contextmanager
def _image_errors(volume: str) -> Iterator[None]:
    """A workspace image that cannot be made (disk full, no mkfs): unavailable, saying why."""
    try:
        yield
    except WorkspaceError as error:
        raise SandboxUnavailable(f"workspace volume {volume}: {error}") from None


def _close_stream(handle: Any, sock: Any) -> None:
    """Close the hijacked HTTP response first (it flushes through the socket), then the socket."""
    response = getattr(handle, "_response", None)
    with contextlib.suppress(Exception):
        if response is not None:
            response.close()
    with contextlib.suppress(Exception):
        (sock or handle).close()


def _result(
    stdout: StreamCapture, stderr: StreamCapture, exit_code: int | None, timed_out: bool, started: float
) -> ExecResult:
    return ExecResult(
        exit_code=exit_code,
        stdout=stdout.text(),
        stderr=stderr.text(),
        truncated=stdout.truncated or stderr.truncated,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        stdout_bytes=stdout.total,
        stderr_bytes=stderr.total,
    )


def _explain(error: docker.errors.APIError) -> str:
    return str(error.explanation or error)[:300]


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return redact(text)[:300]
