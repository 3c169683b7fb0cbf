"""The managed-process contract: long-running processes inside a scope's sandbox.

A handler that holds ``SandboxTools`` may also hold ``SandboxProcesses`` (the actors' tools
implement both; check with ``isinstance(tools, SandboxProcesses)``)::

    info = await tools.start_process(ProcessArgs(process_id="mcp-files", argv=["python3", "server.py"]))
    attachment = await tools.attach("mcp-files")      # one attacher at a time
    await attachment.write(b'{"jsonrpc": "2.0", ...}\\n')
    data = await attachment.read()                     # b"" once the process ended or restarted
    await attachment.close()
    await tools.stop_process("mcp-files")              # stdin closed -> 5 s -> TERM -> 5 s -> KILL

Reports (``ProcessInfo``) carry the names of the environment variables, never their values,
and at most a bounded tail of the process's stderr. Stdout nobody reads is kept in a bounded
buffer for the next attacher; past it the oldest bytes are dropped and counted.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from callboard.engine.sandbox_api import WORKSPACE

ProcessState = Literal["starting", "running", "stopping", "exited", "failed"]
RestartPolicy = Literal["always", "on-failure", "never"]
PROCESS_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ProcessArgs(BaseModel):
    """Start a long-running process in the sandbox (kept running, restarted by its policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    process_id: str = Field(default="default", pattern=PROCESS_ID_PATTERN)
    argv: list[str] = Field(min_length=1, description="program and arguments, run without a shell")
    env: dict[str, str] = Field(default_factory=dict, repr=False, description="values are never reported")
    cwd: str = Field(default=WORKSPACE)
    restart: RestartPolicy = "on-failure"
    #: restarts allowed within ``restart_window`` seconds before the process is given up
    max_restarts: int = Field(default=5, ge=0)
    restart_window: float = Field(default=60.0, gt=0)
    #: a command run in the sandbox every ``health_interval``; three failures in a row restart
    health_argv: list[str] | None = None
    health_interval: float = Field(default=30.0, gt=0)

    @field_validator("argv")
    @classmethod
    def _no_nul(cls, value: list[str]) -> list[str]:
        if any("\0" in part for part in value):
            raise ValueError("argv may not contain NUL characters")
        return value


class ProcessInfo(BaseModel):
    """What may be reported of a managed process (no environment values, a bounded stderr tail)."""

    model_config = ConfigDict(frozen=True)

    process_id: str
    state: ProcessState
    argv: list[str]
    env_keys: list[str]
    pid: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    attached: bool = False
    stderr_preview: str = ""
    #: stdout bytes waiting for an attacher, and dropped (oldest first) past the bounded buffer
    output_buffered: int = 0
    output_dropped: int = 0
    error: str | None = None


@runtime_checkable
class Attachment(Protocol):
    """The stdin/stdout of one managed process, held by one caller at a time."""

    @property
    def dropped(self) -> int:
        """Stdout bytes this attacher never saw: dropped while nobody (or a slow reader) held it."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def read(self) -> bytes:
        """The next chunk of stdout; ``b""`` once the process ended (or restarted: re-attach)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SandboxProcesses(Protocol):
    """Managed processes of one scope's sandbox; errors are the ``SandboxError`` family."""

    #: the sandbox's scope key: callers with the same key share its processes
    key: str

    async def start_process(self, args: ProcessArgs) -> ProcessInfo:
        """Start it, or return the running one of the same id."""
        ...

    async def get_process(self, process_id: str = "default") -> ProcessInfo: ...

    async def stop_process(self, process_id: str = "default") -> ProcessInfo: ...

    async def attach(self, process_id: str = "default") -> Attachment: ...

    def record_call(
        self, process_id: str, name: str, status: str, duration: float, bytes_in: int, bytes_out: int
    ) -> None:
        """Audit one request served by an attached process (an MCP ``tools/call``): its name
        and sizes, never its arguments or answer."""
        ...
