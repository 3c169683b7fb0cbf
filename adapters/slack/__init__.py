"""Slack, through slack_sdk: Socket Mode or the HTTP Events API, the common
event set, and the unified platform API (see docs/slack.md)."""

from callboard.adapters.slack.adapter import SlackAdapter

ADAPTER = SlackAdapter
