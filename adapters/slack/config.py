"""``adapter:`` block of a Slack bot."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from callboard.adapters.base import AdapterConfig
from callboard.engine.platform import RateLimits
from callboard.engine.units import Duration

SLACK_API = "https://slack.com/api/"

_BOT_TOKEN = re.compile(r"^xoxb-[A-Za-z0-9-]+$")
_APP_TOKEN = re.compile(r"^xapp-[A-Za-z0-9-]+$")
_SIGNING_SECRET = re.compile(r"^[A-Za-z0-9]{16,128}$")


class SlackAdapterConfig(AdapterConfig):
    type: Literal["slack"] = "slack"
    bot_token: SecretStr = Field(description="the bot user OAuth token (xoxb-...); use ${SLACK_BOT_TOKEN}")
    app_token: SecretStr | None = Field(
        default=None,
        description="socket mode: an app-level token (xapp-...) with connections:write; "
        "use ${SLACK_APP_TOKEN}",
    )
    signing_secret: SecretStr | None = Field(
        default=None,
        description="http mode: the app's signing secret, checked on every request; "
        "use ${SLACK_SIGNING_SECRET}",
    )
    mode: Literal["socket", "http"] = Field(
        default="socket",
        description="socket: Socket Mode websocket (no public URL needed); http: the Events API posts to "
        "/slack/<bot id>/events on this engine",
    )
    channel_messages: Literal["mention", "all"] = Field(
        default="mention",
        description="public and private channels: deliver only messages that mention the bot, or all "
        "(direct and group direct messages are always delivered)",
    )
    thread_sessions: bool = Field(
        default=True,
        description="a thread is its own session (channel + thread_ts), not part of the channel's",
    )
    base_url: str = Field(default=SLACK_API, description="Web API root the SDK calls, ending in /api/")
    request_timeout: Duration = Field(default=10.0, gt=0, description="timeout of one Web API call")
    ping_interval: Duration = Field(
        default=5.0,
        gt=0,
        description="socket mode: websocket ping interval; a socket found down (closed, or no pong for four "
        "pings) at two checks this far apart is reconnected",
    )
    token_check_interval: Duration = Field(
        default=300.0,
        gt=0,
        description="http mode: how often auth.test confirms the bot token still works (a refused token "
        "stops the bot; Slack unreachable marks the connection down)",
    )
    user_cache_ttl: Duration = Field(
        default=600.0, ge=0, description="how long get_user_info answers from its cache (users.info, tier 4)"
    )
    rate_limits: RateLimits | None = Field(
        default=None,
        description="override Slack's outbound limits (about 1 message/s per channel); for tests and "
        "benchmarks",
    )
    tier_limits: bool = Field(
        default=True,
        description="pace Web API calls by Slack's per-method tiers (1/20/50/100 per minute); off only "
        "for tests and benchmarks",
    )

    @field_validator("bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr) -> SecretStr:
        if not _BOT_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("bot_token must be a bot token: 'xoxb-' followed by letters, digits and '-'")
        return value

    @field_validator("app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _APP_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "app_token must be an app-level token: 'xapp-' followed by letters, digits and '-'"
            )
        return value

    @field_validator("signing_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SIGNING_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("signing_secret must be 16-128 letters and digits (Basic Information page)")
        return value

    @field_validator("base_url")
    @classmethod
    def _api_root(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        if not value.endswith("/"):
            value += "/"
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SlackAdapterConfig:
        if self.mode == "socket" and self.app_token is None:
            raise ValueError("socket mode needs app_token (xapp-...)")
        if self.mode == "http" and self.signing_secret is None:
            raise ValueError("http mode needs signing_secret")
        return self
