"""Plugin settings in the fleet file: the ``plugin`` rule's ``handler_config``,
the ``plugins:`` list (what to load, with each plugin's config values) and
``plugin_runtime:`` (timeouts, health checks, restarts, limits, logs).

    plugins:
      - path: examples/plugins/keyword_reply
        config: {keywords: {hello: "hi there"}}
      - package: my_installed_plugin
        runner: shared              # share one runner process with others that say so
    bots:
      - id: demo
        default: plugins            # unrouted events go to every plugin
        handlers:
          - event_type: "*"
            handler_type: plugin
            handler_config: {plugin_filter: [keyword-reply]}
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from callboard.engine.plugin_protocol import PluginManifest
from callboard.engine.units import Duration
from callboard.handlers.plugin.manifest import ManifestError, find_manifest

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*$")
_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, None: 1}
_RUNNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def parse_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("a size is a number of bytes or e.g. 512MiB, 2GiB (0: no limit)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


class PluginHandlerConfig(_Strict):
    """``handler_type: plugin``: the event goes to plugin listeners, highest priority first."""

    handler_type: Literal["plugin"] = Field(default="plugin", exclude=True)
    plugin_filter: list[str] = Field(
        default_factory=list, description="plugin names that see the event; empty: every plugin"
    )


class PluginSpec(_Strict):
    """One entry of ``plugins:``: a plugin folder or an installed package."""

    path: str | None = Field(default=None, description="a folder with plugin.yaml (relative: to the cwd)")
    package: str | None = Field(default=None, description="an installed package with plugin.yaml in it")
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict, description="validated by the plugin's Config model")
    runner: str | None = Field(
        default=None, description="runner process name; plugins naming the same runner share it"
    )
    memory_limit: int | None = Field(
        default=None, description="address-space limit of the runner (e.g. 512MiB); default plugin_runtime's"
    )
    isolation: Literal["process", "container"] = Field(
        default="process",
        description="process: the runner is a process of the engine's machine; container: it runs in a "
        "sandbox container (the fleet's sandbox block), reaching the engine only through its socket",
    )
    sandbox_profile: str = Field(
        default="default",
        description="with isolation: container, the sandbox profile whose limits and image the "
        "runner's container gets",
    )
    _manifest: PluginManifest | None = PrivateAttr(default=None)
    _root: Path | None = PrivateAttr(default=None)

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @field_validator("runner")
    @classmethod
    def _runner_name(cls, value: str | None) -> str | None:
        if value is not None and not _RUNNER.match(value):
            raise ValueError("a runner name is 1-64 letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _read_manifest(self) -> PluginSpec:
        if (self.path is None) == (self.package is None):
            raise ValueError("give exactly one of path (a plugin folder) or package (an installed package)")
        try:
            self._root, self._manifest = find_manifest(self.path, self.package)
        except ManifestError as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def manifest(self) -> PluginManifest:
        assert self._manifest is not None
        return self._manifest

    @property
    def root(self) -> Path:
        """The plugin's folder (its package directory for an installed plugin)."""
        assert self._root is not None
        return self._root

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def runner_name(self) -> str:
        return self.runner or self.name

    def wire(self) -> dict[str, Any]:
        """What the runner is told to load."""
        return {
            "name": self.name,
            "entry": self.manifest.entry,
            "path": str(self.root) if self.package is None else None,
            "package": self.package,
            "config": self.config,
        }


class PluginRuntimeConfig(_Strict):
    """How runner processes are started, checked, restarted and stopped."""

    start_timeout: Duration = Field(
        default=20.0, gt=0, description="spawn to handshake, and handshake to ready"
    )
    call_timeout: Duration = Field(default=30.0, gt=0, description="deadline of one call either way")
    event_timeout: Duration = Field(
        default=30.0, gt=0, description="deadline of one plugin's listeners for an event"
    )
    health_interval: Duration = Field(default=10.0, gt=0)
    health_timeout: Duration = Field(
        default=5.0, gt=0, description="a health check not answered by then fails"
    )
    stop_timeout: Duration = Field(
        default=5.0, gt=0, description="each shutdown stage: drain, shutdown, SIGTERM; then SIGKILL"
    )
    max_restarts: int = Field(default=5, ge=0, description="restarts allowed within restart_window")
    restart_window: Duration = Field(default=60.0, gt=0)
    backoff_min: Duration = Field(default=0.5, gt=0)
    backoff_max: Duration = Field(default=30.0, gt=0)
    memory_limit: int = Field(default=1 << 30, description="address-space limit per runner; 0: none")
    log_queue: int = Field(default=1000, ge=10, description="records a runner buffers; the oldest drop first")
    log_batch: int = Field(default=100, ge=1)
    log_interval: Duration = Field(default=0.2, gt=0)
    log_rate: int = Field(default=2000, ge=1, description="records per second per runner the host writes")
    watch: bool = Field(default=True, description="reload a plugin when its files change")
    watch_interval: Duration = Field(default=1.0, gt=0)

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value)

    @model_validator(mode="after")
    def _backoff(self) -> PluginRuntimeConfig:
        if self.backoff_max < self.backoff_min:
            raise ValueError("backoff_max must be at least backoff_min")
        return self


def check_plugins(
    plugins: list[PluginSpec],
    filters: list[tuple[str, list[str]]],
    sandbox_profiles: Collection[str] | None = None,
) -> None:
    """Plugin names are unique, every ``plugin_filter`` names a configured plugin, and
    container runners have a sandbox to run in; ``filters`` is (where, names) per
    plugin rule, ``sandbox_profiles`` the fleet's profiles (None: sandboxes are off)."""
    seen: set[str] = set()
    runners: dict[str, tuple[str, str]] = {}
    for index, spec in enumerate(plugins):
        if spec.name in seen:
            raise ValueError(f"plugin {spec.name!r} is listed twice")
        seen.add(spec.name)
        where = f"plugins[{index}] ({spec.name})"
        if spec.isolation == "container" and spec.enabled:
            if sandbox_profiles is None:
                raise ValueError(
                    f"{where}: isolation: container needs the fleet's sandbox block, enabled "
                    "(the runner's container is made like a sandbox session's)"
                )
            if spec.sandbox_profile not in sandbox_profiles:
                raise ValueError(f"{where}: sandbox_profile is not one of the sandbox.profiles")
        kind = (spec.isolation, spec.sandbox_profile if spec.isolation == "container" else "")
        if runners.setdefault(spec.runner_name, kind) != kind:
            raise ValueError(
                f"{where}: plugins sharing runner {spec.runner_name!r} must have the same "
                "isolation and sandbox_profile"
            )
    for where, names in filters:
        unknown = sorted(set(names) - seen)
        if unknown:
            raise ValueError(f"{where}: plugin_filter names plugins that are not configured: {unknown}")
