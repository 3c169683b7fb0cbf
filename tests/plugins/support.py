"""Helpers for plugin tests: fleets with plugins, the test plugins' folder."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from callboard.actors.config import FleetConfig
from callboard.actors.config_file import parse_fleet
from callboard.app import Running
from tests.support import WEB, ChatClient, eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "plugins"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

FAST_RUNTIME = """
plugin_runtime:
  start_timeout: 20s
  health_interval: 500ms
  health_timeout: 1s
  event_timeout: 5s
  stop_timeout: 2s
  backoff_min: 100ms
  backoff_max: 500ms
  watch: false
"""


def plugin_fleet(tmp_path: Path, plugins: str, rules: str, **options: str) -> FleetConfig:
    """A fleet with ``plugins`` (YAML list items) and one web bot with ``rules``."""
    return parse_fleet(fleet_text(tmp_path, plugins, rules, **options), "test.yaml")


def fleet_text(
    tmp_path: Path,
    plugins: str,
    rules: str,
    *,
    runtime: str = FAST_RUNTIME,
    default: str = "drop",
    bot_extra: str = "",
    admin: str = "{host: 127.0.0.1, port: 0}",
) -> str:
    return (
        f"name: test\nengine:\n  journal: {tmp_path / 'journal.sqlite3'}\n"
        f"  admin: {admin}\n  shutdown_timeout: 10s\n"
        + textwrap.dedent(runtime)
        + "plugins:\n"
        + textwrap.indent(textwrap.dedent(plugins).strip("\n"), "  ")
        + "\nbots:\n  - id: demo\n"
        + f"    adapter: {{type: web, {WEB}}}\n"
        + "    session: {debounce: {window: 0}}\n"
        + f"    default: {default}\n"
        + (f"    {bot_extra}\n" if bot_extra else "")
        + "    handlers:\n"
        + textwrap.indent(textwrap.dedent(rules).strip("\n"), "      ")
        + "\n"
    )


def fleet_plugins(fleet: Running) -> list[dict[str, Any]]:
    """The plugins as ``GET /api/plugins`` lists them (read in process)."""
    actor = fleet.system.lookup("/fleet")
    assert actor is not None
    hub = actor._cell.actor.plugin_hub  # type: ignore[union-attr]
    return list(hub.info())


async def groups(client: ChatClient, *names: str) -> None:
    """Join and subscribe to group chats (their ids are used as given, so rules can name them)."""
    for name in names:
        await client.join(name)
        await client.subscribe(name, group=True)


async def say(client: ChatClient, group: str, text: str) -> str:
    return await client.say(text, chat_id=group, chat_type="group")


def texts(client: ChatClient, chat: str) -> list[str]:
    """The bot's messages in ``chat``, in order."""
    return [f["text"] for f in client.of("message") if f["chat_id"] == chat]


async def soon(check: Any, timeout: float = 60.0) -> Any:
    """``eventually`` with room for a shared, busy machine (the tests assert no timing)."""
    return await eventually(check, timeout=timeout)
