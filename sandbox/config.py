"""Sandbox configuration: the fleet's ``sandbox:`` block and each bot's ``bots[].sandbox:``.

``SandboxSettings`` (fleet level) says where the container engine is, which
image to run, how many sessions may live at once, when idle ones are reaped,
and which resource profiles exist. ``SandboxPolicy`` (per bot) says whether
the bot may use a sandbox at all, how sessions are scoped, which profile and
which tools it gets. Every field has a safe default: hardened containers, no
network, no host mounts, exec only where a bot opts in.

Sizes accept bytes or ``k``/``m``/``g``/``t`` suffixes (binary: ``512m`` is
512 MiB; ``KiB``/``MB`` spellings are accepted too). Durations accept seconds or
``250ms``/``30s``/``10m``/``1h``/``2d``.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from callboard.engine.sandbox_api import TOOL_NAMES, ToolName
from callboard.engine.units import Duration
from callboard.sandbox.mounts import MountRefused, check_root, check_source, check_target, engine_sockets

#: where a profile's skills are mounted, one folder each
SKILLS_DIR = "/workspace/.skills"
#: the event fields a scope template may use (``run`` is unique per handler run)
SCOPE_FIELDS = ("bot_id", "chat_type", "chat_id", "thread", "user_id", "run")

DEFAULT_IMAGE = "localhost/callboard-sandbox:latest"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_USER = re.compile(r"^(\d+)(?::(\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENGINE_SCHEMES = ("unix://", "tcp://", "http://", "https://", "ssh://", "npipe://")


def parse_size(value: Any) -> int:
    """Bytes as an int; raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("a size cannot be a boolean")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    else:
        raise ValueError("invalid size: use bytes or a number with k, m, g or t (e.g. 512m)")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[kmgtKMGT]?([iI]?[bB])?\s*$"},
            ]
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SandboxMount(_Strict):
    """A host directory bind-mounted into the sandbox; only under ``allowed_mount_roots``."""

    source: str = Field(description="absolute host path; must resolve under one of allowed_mount_roots")
    target: str = Field(description="mount point in the container, below /mnt or /workspace")
    read_only: bool = Field(default=True, description="mount read-only (the default)")

    @field_validator("target")
    @classmethod
    def _valid_target(cls, value: str) -> str:
        return check_target(value)


class SandboxProfile(_Strict):
    """Resources and isolation of one kind of sandbox container."""

    image: str | None = Field(default=None, description="image for this profile; default: sandbox.image")
    memory: ByteSize = Field(default=512 << 20, ge=16 << 20, description="memory limit (no swap), e.g. 512m")
    cpus: float = Field(default=1.0, gt=0, le=256, description="CPU limit in cores, e.g. 0.5")
    pids: int = Field(default=128, ge=8, le=65536, description="most processes and threads at once")
    workspace_size: ByteSize = Field(
        default=256 << 20, ge=1 << 20, description="size of the /workspace tmpfs (counts against memory)"
    )
    tmp_size: ByteSize = Field(default=64 << 20, ge=1 << 20, description="size of the /tmp tmpfs")
    network: bool = Field(default=False, description="give the container a network (off: loopback only)")
    user: str = Field(default="1000:1000", description="numeric uid[:gid] commands run as; never 0 (root)")
    exec_timeout: Duration = Field(default=30.0, gt=0, description="default time limit of one command")
    max_exec_timeout: Duration = Field(default=300.0, gt=0, description="the most a caller may ask for")
    output_limit: ByteSize = Field(
        default=16 << 10, ge=256, description="bytes kept per stream of a command (head and tail)"
    )
    file_limit: ByteSize = Field(
        default=4 << 20, ge=1 << 10, description="largest file read or written by the tools"
    )
    env: dict[str, str] = Field(
        default_factory=dict, repr=False, description="environment of every command (never logged)"
    )
    mounts: list[SandboxMount] = Field(
        default_factory=list, description="host mounts (see allowed_mount_roots)"
    )
    persistent_workspace: bool = Field(
        default=False,
        description="/workspace on a named volume per scope key (kept across containers and restarts; "
        "workspace_size is its quota) instead of a tmpfs",
    )
    skills: dict[str, str] = Field(
        default_factory=dict,
        description="skills: name -> host folder (instructions and scripts), mounted read-only at "
        "/workspace/.skills/<name>; folders only under allowed_mount_roots",
    )

    @field_validator("skills")
    @classmethod
    def _skill_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"invalid skill name {name!r}: letters, digits, '.', '-', '_'")
        return value

    def all_mounts(self) -> list[SandboxMount]:
        """The profile's mounts plus its skills (read-only, below /workspace/.skills)."""
        skills = [
            SandboxMount(source=source, target=f"{SKILLS_DIR}/{name}", read_only=True)
            for name, source in sorted(self.skills.items())
        ]
        return [*self.mounts, *skills]

    @field_validator("user")
    @classmethod
    def _non_root(cls, value: str) -> str:
        match = _USER.match(value)
        if match is None:
            raise ValueError("user must be a numeric uid or uid:gid, e.g. 1000:1000")
        if int(match.group(1)) == 0:
            raise ValueError("user must not be root (uid 0)")
        if int(match.group(1)) == 65534:
            raise ValueError("uid 65534 is reserved for the sandbox's PID 1")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError("invalid environment variable name: letters, digits and '_'")
        return value

    @model_validator(mode="after")
    def _timeouts(self) -> SandboxProfile:
        if self.exec_timeout > self.max_exec_timeout:
            raise ValueError("exec_timeout must not exceed max_exec_timeout")
        return self


class SandboxSettings(_Strict):
    """The fleet's sandbox block: engine, image, limits, reaping and profiles."""

    enabled: bool = Field(default=True, description="false turns every sandbox of the fleet off")
    engine_url: str | None = Field(
        default=None,
        description="Docker Engine API endpoint: unix:///run/podman/podman.sock, tcp://host:2375...; "
        "unset: DOCKER_HOST and the usual sockets",
    )
    api_version: str = Field(
        default="1.41", description="Engine API version to speak, or 'auto' to negotiate"
    )
    engine_timeout: Duration = Field(default=30.0, gt=0, description="time limit of one engine API request")
    engine_retry_max: Duration = Field(
        default=60.0, gt=0, description="longest pause between attempts to reach a down engine"
    )
    image: str = Field(
        default=DEFAULT_IMAGE, description="image of every sandbox (build: callboard sandbox build-image)"
    )
    max_sessions: int = Field(default=20, ge=1, le=10_000, description="most sandbox containers at once")
    workspace_max_age: Duration | None = Field(
        default=None, gt=0, description="persistent workspaces older than this are removed by the sweep"
    )
    workspace_dir: str | None = Field(
        default=None,
        description="host directory of the ext4 images behind persistent workspaces (a hard quota); "
        "unset: 'workspaces' next to the journal",
    )
    tenant_max_sessions: dict[str, int] = Field(
        default_factory=dict,
        description="most sandbox containers at once per tenant id (bots[].sandbox.tenant)",
    )
    tenant_max_cpu_seconds: dict[str, Duration] = Field(
        default_factory=dict,
        description="tenant id -> CPU time its sandbox containers may use within tenant_cpu_window "
        "(e.g. 30m); over it, its new sandbox calls are refused",
    )
    tenant_cpu_window: Duration = Field(
        default=86400.0, gt=0, description="the sliding window of tenant_max_cpu_seconds"
    )
    tenant_max_disk: dict[str, ByteSize] = Field(
        default_factory=dict,
        description="tenant id -> bytes its persistent workspaces may hold together; over it, its "
        "new sandbox calls are refused",
    )
    idle_ttl: Duration = Field(
        default=600.0, gt=0, description="an unused sandbox is removed after this long"
    )
    sweep_interval: Duration = Field(
        default=60.0, gt=0, description="how often containers no session owns (orphans) are removed"
    )
    allowed_mount_roots: list[str] = Field(
        default_factory=list, description="host directories profiles may mount from; empty: no host mounts"
    )
    profiles: dict[str, SandboxProfile] = Field(
        default_factory=lambda: {"default": SandboxProfile()},
        description="named resource profiles; 'default' always exists",
    )

    @field_validator("engine_url")
    @classmethod
    def _engine_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_ENGINE_SCHEMES):
            raise ValueError(f"engine_url must start with one of {', '.join(_ENGINE_SCHEMES)}")
        return value

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value != "auto" and not re.match(r"^1\.\d+$", value):
            raise ValueError("api_version must look like 1.41, or be 'auto'")
        return value

    @field_validator("workspace_dir")
    @classmethod
    def _absolute_dir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("workspace_dir must be an absolute path")
        return value

    @field_validator("allowed_mount_roots")
    @classmethod
    def _roots(cls, value: list[str]) -> list[str]:
        return [check_root(root) for root in value]

    @field_validator("profiles")
    @classmethod
    def _default_profile(cls, value: dict[str, SandboxProfile]) -> dict[str, SandboxProfile]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError("invalid profile name: letters, digits, '.', '-', '_'")
        return value if "default" in value else {"default": SandboxProfile(), **value}

    @model_validator(mode="after")
    def _mounts_allowed(self) -> SandboxSettings:
        sockets = engine_sockets(self.engine_url)
        for name, profile in self.profiles.items():
            for index, mount in enumerate(profile.mounts):
                try:
                    check_source(mount.source, self.allowed_mount_roots, sockets)
                except MountRefused as error:
                    raise ValueError(f"profiles.{name}.mounts.{index}.source: {error}") from None
            for skill, source in profile.skills.items():
                try:
                    check_source(source, self.allowed_mount_roots, sockets)
                except MountRefused as error:
                    raise ValueError(f"profiles.{name}.skills.{skill}: {error}") from None
        return self

    def profile(self, name: str) -> SandboxProfile:
        """The named profile, or ValueError listing the defined ones."""
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise ValueError(f"sandbox profile {name!r} is not defined (defined: {known})") from None

    def image_for(self, profile: SandboxProfile) -> str:
        return profile.image or self.image


class SandboxPolicy(_Strict):
    """What one bot may do with sandboxes; checked before every call."""

    enabled: bool = Field(default=False, description="give this bot sandboxes at all")
    scope: Literal["session", "user", "bot", "group_user", "run", "template"] = Field(
        default="session",
        description=(
            "one sandbox per chat session (default), per user across chats, one for the whole bot, "
            "per user within a group chat, per handler run (a message or a debounced burst), "
            "or from scope_template"
        ),
    )
    scope_template: str | None = Field(
        default=None,
        description="with scope: template, the key from event fields, e.g. '{chat_id}/{user_id}'",
    )
    profile: str = Field(default="default", description="name of a profile in sandbox.profiles")
    exec_allowed: bool = Field(default=True, description="allow the exec tool (running commands) at all")
    exec_handlers: list[str] | None = Field(
        default=None, description="only these handlers may use exec; unset: every handler of the bot"
    )
    tools: list[ToolName] = Field(
        default_factory=lambda: list(TOOL_NAMES),
        description="tools this bot may use: exec, read, write, edit, glob, grep",
    )
    network: bool | None = Field(default=None, description="override the profile's network setting")
    tenant: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="a tenant id for this bot's sandboxes: on their containers' labels and in the audit log",
    )

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, value: list[ToolName]) -> list[ToolName]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _template_fields(self) -> SandboxPolicy:
        """A template names only fields every event has a place for; one it cannot fill is
        refused here, not at the first message (where it would fall open into one sandbox)."""
        if self.scope != "template":
            if self.scope_template is not None:
                raise ValueError("scope_template is used only with scope: template")
            return self
        if not self.scope_template:
            raise ValueError("scope: template needs scope_template, e.g. '{chat_id}/{user_id}'")
        try:
            fields = [
                name for _, name, spec, _ in string.Formatter().parse(self.scope_template) if name is not None
            ]
        except ValueError as error:
            raise ValueError(f"scope_template: {error}") from None
        if not fields:
            raise ValueError("scope_template names no field: every event would share one sandbox")
        for name in fields:
            if name not in SCOPE_FIELDS:
                raise ValueError(
                    f"scope_template: unknown field {{{name}}}; known: {', '.join(SCOPE_FIELDS)}"
                )
        return self

    def check_profile(self, settings: SandboxSettings) -> SandboxProfile:
        """The policy's profile in ``settings``; ValueError if it is not defined."""
        return settings.profile(self.profile)
