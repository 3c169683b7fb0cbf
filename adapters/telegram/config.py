"""``adapter:`` block of a Telegram bot."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from telegram.constants import UpdateType

from callboard.adapters.base import AdapterConfig
from callboard.engine.platform import RateLimits
from callboard.engine.units import Duration

TELEGRAM_API = "https://api.telegram.org/bot"

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_UPDATE_TYPES = frozenset(str(kind) for kind in UpdateType)


class TelegramAdapterConfig(AdapterConfig):
    type: Literal["telegram"] = "telegram"
    token: SecretStr = Field(description="the bot token from @BotFather; use ${TELEGRAM_TOKEN}")
    mode: Literal["polling", "webhook"] = Field(
        default="polling", description="long polling (getUpdates) or a webhook on the engine's HTTP server"
    )
    webhook_url: str | None = Field(
        default=None,
        description="webhook mode: the public https URL Telegram posts to; it must reach "
        "/telegram/<bot id>/webhook on this engine",
    )
    secret_token: SecretStr | None = Field(
        default=None,
        description="webhook mode: 1-256 of A-Z a-z 0-9 _ -, checked on every delivery",
    )
    max_connections: int = Field(
        default=40, ge=1, le=100, description="webhook mode: concurrent deliveries Telegram may make"
    )
    webhook_check_interval: Duration = Field(
        default=60.0, gt=0, description="webhook mode: how often getWebhookInfo checks the webhook is ours"
    )
    base_url: str = Field(
        default=TELEGRAM_API, description="Bot API root, ending in /bot (the token is appended)"
    )
    base_file_url: str | None = Field(
        default=None, description="file download root; derived from base_url when omitted"
    )
    allowed_updates: list[str] | None = Field(
        default=None,
        description="update kinds to receive; omitted: Telegram's default (all but chat_member "
        "and reactions). Add chat_member and message_reaction to get those",
    )
    poll_timeout: Duration = Field(default=30.0, ge=1, le=50, description="long-poll wait of one getUpdates")
    request_timeout: Duration = Field(
        default=10.0, gt=0, description="connect/read/write timeout of one Bot API call (on top of the poll)"
    )
    stale_after: Duration | None = Field(
        default=None,
        description="polling mode: no answer to getUpdates for this long restarts the connection "
        "(default: 3 x (poll_timeout + request_timeout))",
    )
    rate_limits: RateLimits | None = Field(
        default=None,
        description="override Telegram's outbound limits (30/s per bot, 1/s per private chat, 20/min "
        "per group); only for bots Telegram allows more, and for tests and benchmarks",
    )

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("token does not look like a bot token (digits, ':', then letters)")
        return value

    @field_validator("secret_token")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("secret_token must be 1-256 characters of A-Z, a-z, 0-9, '_' and '-'")
        return value

    @field_validator("base_url", "base_file_url", "webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("base_url", "base_file_url")
    @classmethod
    def _ends_in_bot(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith("/bot") and "{token}" not in value:
            raise ValueError("must end in '/bot' (the token is appended to it) or contain {token}")
        return value

    @field_validator("allowed_updates")
    @classmethod
    def _known_updates(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for index, kind in enumerate(value):
                if kind not in _UPDATE_TYPES:
                    raise ValueError(
                        f"item {index} is not an update kind; known: {', '.join(sorted(_UPDATE_TYPES))}"
                    )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TelegramAdapterConfig:
        if self.mode == "webhook" and (self.webhook_url is None or self.secret_token is None):
            raise ValueError("webhook mode needs webhook_url and secret_token")
        if self.base_file_url is None:
            if "{token}" in self.base_url:
                raise ValueError("a base_url with {token} needs base_file_url too")
            self.base_file_url = self.base_url.removesuffix("/bot") + "/file/bot"
        if self.stale_after is not None and self.stale_after <= self.poll_timeout + self.request_timeout:
            raise ValueError("stale_after must be longer than poll_timeout + request_timeout")
        return self

    @property
    def stale_seconds(self) -> float:
        return self.stale_after or 3 * (self.poll_timeout + self.request_timeout)
