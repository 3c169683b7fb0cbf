"""``callboard slack manifest FILE``: the app manifest follows the bot's config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from callboard.adapters.slack.manifest import CHANNEL_EVENTS, main

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_needs_no_tokens_and_turns_socket_mode_on() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "callboard.cli",
            "slack",
            "manifest",
            str(ROOT / "config" / "slack.example.yaml"),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    manifest = yaml.safe_load(done.stdout)
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert "request_url" not in settings["event_subscriptions"]
    events = settings["event_subscriptions"]["bot_events"]
    assert "app_mention" in events and "message.im" in events and "reaction_added" in events
    assert not set(CHANNEL_EVENTS) & set(events)  # channel_messages: mention
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert {"chat:write", "files:write", "reactions:write", "users:read", "channels:history"} <= set(scopes)
    assert settings["interactivity"]["is_enabled"] is True


def test_http_mode_with_all_channel_messages(tmp_path: Path, capsys: object) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "bots:\n"
        "  - id: helper\n"
        "    adapter: {type: slack, mode: http, channel_messages: all,\n"
        "              bot_token: '${T}', signing_secret: '${S}'}\n"
        "  - id: web\n"
        "    adapter: {type: web}\n"
    )
    assert main(["manifest", str(fleet), "--url", "https://bots.example.com/", "--json"]) == 0

    out = capsys.readouterr().out  # type: ignore[attr-defined]
    manifest = json.loads(out)
    url = "https://bots.example.com/slack/helper/events"
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["event_subscriptions"]["request_url"] == url
    assert manifest["settings"]["interactivity"]["request_url"] == url
    assert set(CHANNEL_EVENTS) <= set(manifest["settings"]["event_subscriptions"]["bot_events"])


def test_a_file_without_slack_bots_is_a_clear_error(tmp_path: Path, capsys: object) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("bots:\n  - id: web\n    adapter: {type: web}\n")
    assert main(["manifest", str(fleet)]) == 1
    assert "no Slack bot" in capsys.readouterr().err  # type: ignore[attr-defined]
    fleet.write_text("bots:\n  - id: s\n    adapter: {type: slack, mode: rtm}\n")
    assert main(["manifest", str(fleet)]) == 1
    assert "bots[0].adapter.mode: must be socket or http" in capsys.readouterr().err  # type: ignore[attr-defined]
