"""The sandbox contract: what handlers call, free of containers and platforms.

Handlers (the agent, the pipeline's ``/run``) and ``sandbox/`` never import each
other; both import this module. A handler receives an object implementing
``SandboxTools``: the sandbox of one scope (chat session, user or bot), with the
bot's policy already applied. Every method takes a typed argument model and
returns a typed result; expected failures raise a ``SandboxError`` subclass
whose ``code`` is stable, so callers never match on message text.

Paths are inside the sandbox: relative paths resolve against ``/workspace``,
absolute ones must lie under it, and ``..`` may not climb out of it.

    result = await tools.exec(ExecArgs(argv=["python3", "-c", "print(6 * 7)"]))
    result.stdout  # "42\\n"
"""

from __future__ import annotations

import posixpath
import re
from typing import ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WORKSPACE = "/workspace"
"""The writable directory every sandbox session gets; the file tools stay inside it."""

ToolName = Literal["exec", "read", "write", "edit", "glob", "grep"]
TOOL_NAMES: tuple[ToolName, ...] = ("exec", "read", "write", "edit", "glob", "grep")

MAX_STDIN_BYTES = 1 << 20
MAX_CONTENT_CHARS = 16 << 20
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------- errors


class SandboxError(Exception):
    """Base of every sandbox failure a caller should expect; ``code`` is stable."""

    code: ClassVar[str] = "sandbox_error"


class SandboxOff(SandboxError):
    """Sandboxes are not configured for this fleet, or disabled for this bot."""

    code = "sandbox_off"


class SandboxUnavailable(SandboxError):
    """The container engine is down or unreachable, or the sandbox was lost.

    Transient: the runtime retries with backoff; a later call may succeed."""

    code = "sandbox_unavailable"


class SandboxBusy(SandboxError):
    """Every sandbox slot is in use, or the session did not answer in time."""

    code = "sandbox_busy"


class SandboxPolicyError(SandboxError):
    """The bot's policy does not allow this call (tool, handler or scope)."""

    code = "policy_denied"


class SandboxQuotaExceeded(SandboxError):
    """The bot's tenant is over a budget (CPU-seconds or disk); the message names which."""

    code = "quota_exceeded"


class SandboxPathError(SandboxError):
    """A path is empty, malformed, or leaves the workspace."""

    code = "bad_path"


class SandboxFileError(SandboxError):
    """A file operation failed inside the sandbox (is a directory, no space...)."""

    code = "file_error"


class SandboxFileNotFound(SandboxFileError):
    """The file or directory does not exist."""

    code = "not_found"


class SandboxEditError(SandboxError):
    """``edit`` found the old text zero times, or more than once without ``replace_all``."""

    code = "edit_failed"


class SandboxProcessNotFound(SandboxError):
    """No managed process of that id in this sandbox."""

    code = "process_not_found"


# ---------------------------------------------------------------------- paths


def workspace_path(path: str) -> str:
    """The absolute, normalised path of ``path`` inside the workspace.

    Raises ``SandboxPathError`` (a ``ValueError`` is raised by the argument
    models, so pydantic names the field) when it would leave the workspace.
    """
    try:
        return _workspace_path(path)
    except ValueError as error:
        raise SandboxPathError(str(error)) from None


def _workspace_path(path: str) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ValueError("path must be a non-empty string")
    if "\x00" in path:
        raise ValueError("path must not contain NUL characters")
    joined = path if path.startswith("/") else posixpath.join(WORKSPACE, path)
    normal = posixpath.normpath(joined)
    if normal != WORKSPACE and not normal.startswith(WORKSPACE + "/"):
        raise ValueError(f"path {path!r} is outside the workspace ({WORKSPACE})")
    return normal


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    return value


def _relative_glob(value: str) -> str:
    if not value:
        raise ValueError("a glob pattern must not be empty")
    if value.startswith("/"):
        raise ValueError("a glob pattern is relative to path; it must not start with '/'")
    if ".." in value.split("/"):
        raise ValueError("a glob pattern must not contain '..'")
    return _no_nul(value, "a glob pattern")


# ---------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExecArgs(_Model):
    """Run one command in the sandbox: an argv list, or a shell command line."""

    argv: list[str] | None = Field(default=None, description="program and arguments, run without a shell")
    command: str | None = Field(default=None, description="a command line, run by /bin/sh -c")
    stdin: str | None = Field(
        default=None, repr=False, description="text written to the command's standard input"
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="extra environment variables (kept out of reprs and logs)",
    )
    cwd: str = Field(default=WORKSPACE, description="working directory (relative to the workspace)")
    timeout: float | None = Field(
        default=None, gt=0, description="seconds; default and ceiling come from the sandbox profile"
    )
    output_limit: int | None = Field(
        default=None, gt=0, description="bytes kept per stream (head and tail); capped by the profile"
    )

    @model_validator(mode="after")
    def _one_command(self) -> ExecArgs:
        if (self.argv is None) == (self.command is None):
            raise ValueError("give exactly one of argv (a list) or command (a shell string)")
        return self

    @field_validator("argv")
    @classmethod
    def _valid_argv(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value or not value[0]:
            raise ValueError("argv must name a program")
        for item in value:
            _no_nul(item, "argv items")
        return value

    @field_validator("command")
    @classmethod
    def _valid_command(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("command must not be empty")
        return None if value is None else _no_nul(value, "command")

    @field_validator("stdin")
    @classmethod
    def _valid_stdin(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) > MAX_STDIN_BYTES:
            raise ValueError(f"stdin is limited to {MAX_STDIN_BYTES} bytes")
        return value

    @field_validator("env")
    @classmethod
    def _valid_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name, item in value.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
            _no_nul(item, f"environment variable {name}")
        return value

    @field_validator("cwd")
    @classmethod
    def _valid_cwd(cls, value: str) -> str:
        return _workspace_path(value)


class ExecResult(_Model):
    """What one command did. ``exit_code`` is None when it was killed on timeout."""

    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool = Field(description="stdout or stderr lost its middle to the output limit")
    timed_out: bool
    duration: float = Field(description="seconds from start to exit (or kill)")
    stdout_bytes: int = Field(description="bytes the command wrote to stdout, kept or not")
    stderr_bytes: int = Field(description="bytes the command wrote to stderr, kept or not")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class _PathArgs(_Model):
    path: str = Field(description="file path (relative to the workspace)")

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        return _workspace_path(value)


class ReadArgs(_PathArgs):
    """Read a text file, optionally a window of its lines."""

    offset: int = Field(default=0, ge=0, description="first line to return (0-based)")
    limit: int | None = Field(default=None, gt=0, description="most lines to return")


class ReadResult(_Model):
    path: str
    content: str = Field(description="UTF-8 text; undecodable bytes are replaced")
    size: int = Field(description="size of the whole file in bytes")
    lines: int = Field(description="lines in the part of the file that was read")
    truncated: bool = Field(description="the file was larger than the profile's file limit")
    binary: bool = Field(description="the file holds NUL bytes or invalid UTF-8")


class WriteArgs(_PathArgs):
    """Create or replace a file (parent directories are created)."""

    content: str = Field(max_length=MAX_CONTENT_CHARS, repr=False)


class WriteResult(_Model):
    path: str
    size: int = Field(description="bytes written")


class EditArgs(_PathArgs):
    """Replace an exact piece of text in a file."""

    old: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS, description="exact text to find")
    new: str = Field(max_length=MAX_CONTENT_CHARS, description="replacement text")
    replace_all: bool = Field(default=False, description="replace every occurrence, not exactly one")

    @model_validator(mode="after")
    def _changes_something(self) -> EditArgs:
        if self.old == self.new:
            raise ValueError("old and new are identical: nothing to edit")
        return self


class EditResult(_Model):
    path: str
    replacements: int


class GlobArgs(_Model):
    """Find files by pattern: ``*``, ``?`` and ``[...]`` within a name, ``**`` across directories."""

    pattern: str = Field(min_length=1, max_length=1000, description="e.g. '**/*.py' or 'src/*.txt'")
    path: str = Field(default=WORKSPACE, description="directory to search (relative to the workspace)")
    limit: int = Field(default=500, ge=1, le=10_000, description="most paths to return")

    @field_validator("pattern")
    @classmethod
    def _relative_pattern(cls, value: str) -> str:
        return _relative_glob(value)

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        return _workspace_path(value)


class GlobResult(_Model):
    paths: list[str] = Field(description="matching files, relative to the workspace, sorted")
    truncated: bool


class GrepArgs(_Model):
    """Search file contents with a Python regular expression, line by line."""

    pattern: str = Field(min_length=1, max_length=1000, description="Python regular expression")
    path: str = Field(default=WORKSPACE, description="file or directory to search")
    glob: str | None = Field(default=None, description="only files whose path matches this glob")
    ignore_case: bool = False
    limit: int = Field(default=200, ge=1, le=10_000, description="most matching lines to return")

    @field_validator("glob")
    @classmethod
    def _valid_glob(cls, value: str | None) -> str | None:
        return None if value is None else _relative_glob(value)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regular expression: {error}") from None
        return value

    @field_validator("path")
    @classmethod
    def _valid_path(cls, value: str) -> str:
        return _workspace_path(value)


class GrepMatch(_Model):
    path: str = Field(description="relative to the workspace")
    line: int = Field(description="1-based line number")
    text: str = Field(description="the line, cut at 500 characters")


class GrepResult(_Model):
    matches: list[GrepMatch]
    truncated: bool
    files_searched: int


# ---------------------------------------------------------------------- the protocol


@runtime_checkable
class SandboxTools(Protocol):
    """One scope's sandbox, policy-checked before every call.

    Each method may raise ``SandboxPolicyError`` (not allowed for this bot or
    handler), ``SandboxOff``, ``SandboxUnavailable`` (engine down: retry
    later), ``SandboxBusy``, or the file errors above. Calls on one sandbox run
    one at a time, in order; different sandboxes run in parallel.
    """

    @property
    def tools(self) -> frozenset[ToolName]:
        """The tools this caller may use (offer only these to a model)."""
        ...

    async def exec(self, args: ExecArgs) -> ExecResult: ...

    async def read(self, args: ReadArgs) -> ReadResult: ...

    async def write(self, args: WriteArgs) -> WriteResult: ...

    async def edit(self, args: EditArgs) -> EditResult: ...

    async def glob(self, args: GlobArgs) -> GlobResult: ...

    async def grep(self, args: GrepArgs) -> GrepResult: ...


class NoSandbox:
    """``SandboxTools`` for a caller that may not have a sandbox: every call raises ``error``.

    Used when sandboxes are off for the fleet or the bot, so handlers get one
    clear error instead of checking for ``None`` everywhere.
    """

    def __init__(self, error: SandboxError) -> None:
        self.error = error

    @property
    def tools(self) -> frozenset[ToolName]:
        return frozenset()

    def _raise(self) -> SandboxError:
        return type(self.error)(*self.error.args)

    async def exec(self, args: ExecArgs) -> ExecResult:
        raise self._raise()

    async def read(self, args: ReadArgs) -> ReadResult:
        raise self._raise()

    async def write(self, args: WriteArgs) -> WriteResult:
        raise self._raise()

    async def edit(self, args: EditArgs) -> EditResult:
        raise self._raise()

    async def glob(self, args: GlobArgs) -> GlobResult:
        raise self._raise()

    async def grep(self, args: GrepArgs) -> GrepResult:
        raise self._raise()
