"""``callboard slack manifest FILE``: the Slack app manifest for a fleet file's
Slack bots, to paste into api.slack.com/apps ("Create New App" -> "From a
manifest"). It follows the bot's config: Socket Mode on or the Events API
request URL, the events it needs (channel messages only with
``channel_messages: all``; ``app_mention`` otherwise), and the bot scopes of
every API the adapter offers. Tokens are not needed to make it (the app does
not exist yet), so the file is read without resolving ``${...}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
import yaml

#: events every bot subscribes to, then those ``channel_messages: all`` adds
EVENTS = (
    "app_mention",
    "message.im",
    "message.mpim",
    "reaction_added",
    "reaction_removed",
    "member_joined_channel",
    "member_left_channel",
    "channel_rename",
    "group_rename",
    "app_uninstalled",
    "tokens_revoked",
)
CHANNEL_EVENTS = ("message.channels", "message.groups")

#: bot scopes, with what needs them
SCOPES: dict[str, str] = {
    "app_mentions:read": "app_mention events",
    "channels:history": "channel messages, get_message",
    "groups:history": "private channel messages, get_message",
    "im:history": "direct messages, get_message",
    "mpim:history": "group direct messages, get_message",
    "channels:read": "get_group_info, get_group_list, member events",
    "groups:read": "the same for private channels",
    "im:read": "direct message channels",
    "mpim:read": "group direct message channels",
    "chat:write": "send, reply, edit, delete, ephemeral and scheduled messages",
    "reactions:read": "reaction events",
    "reactions:write": "add_reaction",
    "users:read": "get_user_info",
    "files:read": "get_file_url, download_file",
    "files:write": "upload_file, images and files in messages",
    "pins:write": "pin_message, unpin_message",
    "channels:manage": "set_group_name, kick_member, leave_group (public channels)",
    "groups:write": "the same for private channels",
    "channels:join": "conversations.join",
    "im:write": "conversations.open",
}


def app_manifest(bot_id: str, mode: str, channel_messages: str, public_url: str | None) -> dict[str, Any]:
    """The manifest of one bot (``public_url``: where Slack reaches this engine, http mode)."""
    events = [*EVENTS, *(CHANNEL_EVENTS if channel_messages == "all" else ())]
    settings: dict[str, Any] = {
        "event_subscriptions": {"bot_events": events},
        "interactivity": {"is_enabled": True},
        "org_deploy_enabled": False,
        "socket_mode_enabled": mode == "socket",
        "token_rotation_enabled": False,
    }
    if mode == "http":
        url = f"{(public_url or 'https://YOUR-PUBLIC-HOST').rstrip('/')}/slack/{bot_id}/events"
        settings["event_subscriptions"]["request_url"] = url
        settings["interactivity"]["request_url"] = url
    return {
        "display_information": {"name": bot_id, "description": "A callboard bot"},
        "features": {
            "app_home": {"messages_tab_enabled": True, "messages_tab_read_only_enabled": False},
            "bot_user": {"display_name": bot_id, "always_online": True},
        },
        "oauth_config": {"scopes": {"bot": list(SCOPES)}},
        "settings": settings,
    }


class ManifestError(Exception):
    pass


def manifests(text: str, file: str, bot: str | None, public_url: str | None) -> dict[str, dict[str, Any]]:
    """Each Slack bot's manifest, by bot id."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{file}: not valid YAML ({exc.__class__.__name__})") from None
    bots = data.get("bots") if isinstance(data, dict) else None
    found: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(bots if isinstance(bots, list) else []):
        adapter = entry.get("adapter") if isinstance(entry, dict) else None
        if not isinstance(adapter, dict) or adapter.get("type") != "slack":
            continue
        bot_id = str(entry.get("id") or "")
        if bot is not None and bot_id != bot:
            continue
        mode = adapter.get("mode", "socket")
        channel_messages = adapter.get("channel_messages", "mention")
        if mode not in ("socket", "http"):
            raise ManifestError(f"{file}: bots[{index}].adapter.mode: must be socket or http")
        if channel_messages not in ("mention", "all"):
            raise ManifestError(f"{file}: bots[{index}].adapter.channel_messages: must be mention or all")
        found[bot_id] = app_manifest(bot_id, mode, channel_messages, public_url)
    if not found:
        raise ManifestError(
            f"{file}: no Slack bot" + (f" with id {bot!r}" if bot else "") + " (adapter type: slack)"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard slack", description="Slack tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("manifest", help="print the Slack app manifest for FILE's Slack bots")
    make.add_argument("file")
    make.add_argument("--bot", help="only this bot (default: every Slack bot in FILE)")
    make.add_argument(
        "--url", help="http mode: the public https root Slack posts to (https://bots.example.com)"
    )
    make.add_argument("--json", action="store_true", help="JSON instead of YAML")
    args = parser.parse_args(argv)
    path = Path(args.file)
    try:
        found = manifests(path.read_text(), str(path), args.bot, args.url)
    except OSError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return 1
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        return 1
    for index, (bot_id, manifest) in enumerate(found.items()):
        if args.json:
            sys.stdout.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2).decode() + "\n")
            continue
        if index:
            sys.stdout.write("---\n")
        sys.stdout.write(f"# Slack app manifest for bot {bot_id!r}\n")
        sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
