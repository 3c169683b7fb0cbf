"""The fleet file's models: ``engine:``, ``sandbox:`` and ``bots:``.

Adapter blocks come from the adapter packages (each declares its own
``config_type``) and sandbox blocks from ``sandbox.config``, so this module
only composes them.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)

from callboard.actors.backlog import MAX_EVENTS, MAX_PENDING
from callboard.adapters.base import AdapterConfig, AdapterUnavailable, adapter_names, load_adapter
from callboard.engine.units import Duration
from callboard.handlers.agent.config import AgentConfig
from callboard.handlers.pipeline import PipelineConfig
from callboard.handlers.plugin.config import (
    PluginHandlerConfig,
    PluginRuntimeConfig,
    PluginSpec,
    check_plugins,
)
from callboard.handlers.routing import RouteRule
from callboard.sandbox.config import SandboxPolicy, SandboxSettings

_BOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DebounceConfig(_Strict):
    window: Duration = Field(default=1.5, description="quiet time that closes a burst; 0 turns debounce off")
    max_wait: Duration = Field(
        default=10.0, description="a burst never waits longer than this from its first message"
    )
    max_batch: int = Field(
        default=50, ge=1, description="a burst closes at once when it reaches this many messages"
    )

    @model_validator(mode="after")
    def _max_wait_covers_window(self) -> DebounceConfig:
        if self.window and self.max_wait < self.window:
            raise ValueError("max_wait must be at least window")
        return self


class SessionConfig(_Strict):
    idle_ttl: Duration = Field(default=600.0, gt=0, description="a session idle this long is passivated")
    debounce: DebounceConfig = Field(default_factory=DebounceConfig)
    handler_timeout: Duration = Field(default=60.0, gt=0, description="deadline of one handler run")
    crash_loop_after: int = Field(
        default=5,
        ge=1,
        description="consecutive failed runs after which the session is restarted with backoff",
    )
    max_pending: int = Field(
        default=MAX_PENDING,
        ge=1,
        description="events a session may hold unhandled; beyond it new ones are refused (busy), not stored",
    )


class BotConfig(_Strict):
    id: str = Field(description="unique within the fleet: letters, digits, '-' and '_'")
    enabled: bool = True
    adapter: AdapterConfig = Field(description="the platform; ``type`` names an installed adapter")
    session: SessionConfig = Field(default_factory=SessionConfig)
    handlers: list[RouteRule] = Field(default_factory=list)
    default: Literal["drop", "plugins"] = Field(
        default="drop",
        description="what happens to events no rule matches: drop them, or give them to every plugin",
    )
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _BOT_ID.match(value):
            raise ValueError(
                "bot id must be 1-64 letters, digits, '-' or '_', starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _agent_deadlines_fit(self) -> BotConfig:
        """An agent's deadline ends before the session's run deadline, so a run
        that fails still tells the user (failure_message) instead of being cut off."""
        for index, rule in enumerate(self.handlers):
            config = rule.handler_config
            agents = [config] if isinstance(config, AgentConfig) else []
            if isinstance(config, PipelineConfig):
                agents = [stage for stage in config.stages if isinstance(stage, AgentConfig)]
            if any(agent.deadline >= self.session.handler_timeout for agent in agents):
                raise ValueError(
                    f"handlers[{index}]: the agent's deadline must be shorter than session.handler_timeout"
                )
        return self


#: journal URLs that select the PostgreSQL journal (docs/scale-out.md)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class JournalConfig(_Strict):
    path: str = Field(
        default="var/callboard.sqlite3",
        description="SQLite file (created if missing); with a url, the admin token and secrets "
        "still live next to it",
    )
    url: SecretStr | list[SecretStr] | None = Field(
        default=None,
        description="postgresql://user:password@host/db selects the PostgreSQL journal "
        "(the 'postgres' extra), shared by the nodes of a cluster; a list of such URLs shards it, "
        "one database per shard, in an order kept for good (docs/scale-out.md)",
    )
    pool_size: int = Field(default=4, ge=1, le=100, description="PostgreSQL connections per node")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="FULL survives power loss; NORMAL survives a killed process only"
    )
    retention: Duration = Field(default=7 * 86400, description="how long handled events are kept")
    dedup_window: Duration = Field(default=86400, description="how long a platform event id is remembered")

    @field_validator("url", mode="before")
    @classmethod
    def _postgres_urls(cls, value: Any) -> Any:
        if value is None or isinstance(value, SecretStr):
            return value
        if isinstance(value, str):
            if not value.startswith(POSTGRES_SCHEMES):
                raise ValueError("must start with postgresql:// (the only journal server supported)")
            return value
        if not isinstance(value, list):
            raise ValueError("must be a postgresql:// URL, or a list of them (one per shard)")
        if not value:
            raise ValueError("a list of shards needs at least one postgresql:// URL")
        seen: dict[tuple[str, int, str], int] = {}
        for index, url in enumerate(value):
            if not isinstance(url, str) or not url.startswith(POSTGRES_SCHEMES):
                raise ValueError(
                    f"shard {index}: must be a postgresql:// URL (shards are PostgreSQL databases; "
                    "a SQLite journal is one path, never a list)"
                )
            parts = urlsplit(url)
            database = (parts.hostname or "", parts.port or 5432, parts.path.strip("/"))
            if database in seen:
                raise ValueError(f"shards {seen[database]} and {index} are the same database")
            seen[database] = index
        return value

    @property
    def urls(self) -> list[str]:
        """The PostgreSQL URLs (with their secrets): one, one per shard, or none for SQLite."""
        if self.url is None:
            return []
        return [u.get_secret_value() for u in (self.url if isinstance(self.url, list) else [self.url])]


#: addresses that only this machine can reach
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class AdminConfig(_Strict):
    """The engine's HTTP server and who may use its admin API (docs/security.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    auth: Literal["auto", "token", "none"] = Field(
        default="auto",
        description="token: every admin route but /healthz and /readyz needs 'Authorization: Bearer "
        "TOKEN'; none: open (only when bound to loopback); auto: none on loopback without a token, "
        "else token",
    )
    token: SecretStr | None = Field(
        default=None,
        description="the admin bearer token; when auth needs one and it is unset, one is generated "
        "at first start and kept (mode 0600) in 'admin-token' next to the journal",
    )
    metrics_open: bool = Field(default=False, description="serve /metrics without the token")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the admin routes answer besides localhost and the bound "
        "address (DNS rebinding); empty with a wildcard bind (0.0.0.0, ::) accepts any",
    )

    @model_validator(mode="after")
    def _none_only_on_loopback(self) -> AdminConfig:
        if self.auth == "none" and self.host not in LOOPBACK_HOSTS:
            raise ValueError("auth: none is allowed only when host is 127.0.0.1, ::1 or localhost")
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters")
        return self

    @property
    def needs_token(self) -> bool:
        if self.auth == "auto":
            return self.token is not None or self.host not in LOOPBACK_HOSTS
        return self.auth == "token"


class BacklogConfig(_Strict):
    """The engine's ceiling on events in flight (accepted, not yet handled), over all bots."""

    max_events: int = Field(
        default=MAX_EVENTS, ge=1, description="beyond it every new event is refused (busy)"
    )
    shed_at: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="from this share of max_events, chats that already hold several events are refused first",
    )


class LoggingConfig(_Strict):
    format: Literal["text", "json"] = Field(
        default="text",
        description="json: one JSON object a line, with the actor path, bot, session, run and event "
        "ids of what was running (secrets masked as in text)",
    )


class ClusterConfig(_Strict):
    """Cluster mode (docs/scale-out.md): nodes share a PostgreSQL journal and a NATS JetStream."""

    nats: SecretStr = Field(description="nats://host:4222 (JetStream on)")
    node: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", description="this node's name, unique")
    partitions: int = Field(default=64, ge=1, le=4096, description="the same on every node, never changed")
    lease: Duration = Field(
        default=3.0, gt=0, description="partition lease time (takeover within about this)"
    )
    stream: str = Field(default="callboard", pattern=r"^[A-Za-z0-9_-]{1,32}$")


class EngineConfig(_Strict):
    journal: JournalConfig = Field(default_factory=JournalConfig)
    cluster: ClusterConfig | None = Field(default=None, description="omit to run as one node")
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    shutdown_timeout: Duration = Field(default=15.0, gt=0)
    backlog: BacklogConfig = Field(default_factory=BacklogConfig)

    @model_validator(mode="after")
    def _cluster_needs_a_shared_journal(self) -> EngineConfig:
        if self.cluster is not None and self.journal.url is None:
            raise ValueError("cluster: needs a shared journal (engine.journal: postgresql://...)")
        return self

    @field_validator("journal", mode="before")
    @classmethod
    def _path_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"url": value} if value.startswith(POSTGRES_SCHEMES) else {"path": value}
        if isinstance(value, list):  # shards
            return {"url": value}
        return value


class FleetConfig(_Strict):
    name: str = Field(default="callboard", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    engine: EngineConfig = Field(default_factory=EngineConfig)
    sandbox: SandboxSettings | None = Field(default=None, description="omit to run without sandboxes")
    bots: list[BotConfig] = Field(default_factory=list)
    allow_no_bots: bool = Field(
        default=False, description="let a reload stop every bot (refused otherwise, as a likely mistake)"
    )
    plugins: list[PluginSpec] = Field(
        default_factory=list, description="plugins run in supervised runner processes"
    )
    plugin_runtime: PluginRuntimeConfig = Field(default_factory=PluginRuntimeConfig)

    @field_validator("bots")
    @classmethod
    def _unique_ids(cls, bots: list[BotConfig]) -> list[BotConfig]:
        seen: dict[str, int] = {}
        for index, bot in enumerate(bots):
            if bot.id in seen:
                raise ValueError(f"bots[{index}] has the same id as bots[{seen[bot.id]}]; ids must be unique")
            seen[bot.id] = index
        return bots

    @model_validator(mode="after")
    def _sandbox_profiles_exist(self) -> FleetConfig:
        if self.sandbox is None:
            return self  # bots asking for sandboxes are told "off" at run time
        for index, bot in enumerate(self.bots):
            if bot.sandbox.enabled and bot.sandbox.profile not in self.sandbox.profiles:
                raise ValueError(f"bots[{index}].sandbox.profile is not one of the sandbox.profiles")
        return self

    @model_validator(mode="after")
    def _plugins_exist(self) -> FleetConfig:
        filters = [
            (f"bot {bot.id!r}, handlers[{i}]", rule.handler_config.plugin_filter)
            for bot in self.bots
            for i, rule in enumerate(bot.handlers)
            if isinstance(rule.handler_config, PluginHandlerConfig)
        ]
        profiles = self.sandbox.profiles if self.sandbox is not None and self.sandbox.enabled else None
        check_plugins(self.plugins, filters, profiles)
        return self


class _Unavailable(AdapterConfig):
    """Stands in for an adapter type that is installed but cannot be imported, so a fleet
    file naming it gets a config error that says what to install."""

    model_config = ConfigDict(extra="allow")
    reason: ClassVar[str] = ""

    @model_validator(mode="after")
    def _refuse(self) -> _Unavailable:
        raise ValueError(self.reason)


def _adapter_configs() -> tuple[type[AdapterConfig], ...]:
    configs: list[type[AdapterConfig]] = []
    for name in adapter_names():
        try:
            configs.append(load_adapter(name).config_type)
        except AdapterUnavailable as exc:
            configs.append(_stand_in(name, str(exc)))
    return tuple(configs)


@functools.cache
def _stand_in(name: str, reason: str) -> type[AdapterConfig]:
    """One stand-in class per unavailable adapter and reason, so parsing the same file twice
    yields equal configs (a reload sees no change) and reuses the cached fleet model."""
    literal: Any = Literal[name]
    stand_in = create_model(f"Unavailable_{name}", __base__=_Unavailable, type=(literal, name))
    stand_in.reason = reason
    return stand_in


@functools.cache
def _fleet_model(configs: tuple[type[AdapterConfig], ...]) -> type[FleetConfig]:
    union: Any = configs[0] if len(configs) == 1 else Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007
    bot = create_model("BotConfig", __base__=BotConfig, adapter=(union, ...))
    fleet: type[FleetConfig] = create_model(
        "FleetConfig",
        __base__=FleetConfig,
        bots=(list[bot], Field(default_factory=list)),  # type: ignore[valid-type]
    )
    return fleet


def fleet_model() -> type[FleetConfig]:
    """``FleetConfig`` whose bots' ``adapter`` blocks are validated by the adapters installed
    now. Resolved when a file is parsed, not when this module is imported, so an adapter
    installed later is accepted by the next parse."""
    return _fleet_model(_adapter_configs())


__all__ = [
    "AdapterConfig",
    "AdminConfig",
    "BacklogConfig",
    "BotConfig",
    "DebounceConfig",
    "EngineConfig",
    "FleetConfig",
    "JournalConfig",
    "LoggingConfig",
    "SessionConfig",
    "fleet_model",
]
