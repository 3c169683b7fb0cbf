"""``adapter:`` block of a Lark/Feishu bot."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from callboard.adapters.base import AdapterConfig
from callboard.adapters.lark.sdk import sdk_version_problem
from callboard.engine.platform import RateLimits
from callboard.engine.units import Duration

#: where ``domain: feishu`` and ``domain: lark`` point
DOMAINS = {"feishu": "https://open.feishu.cn", "lark": "https://open.larksuite.com"}


class LarkAdapterConfig(AdapterConfig):
    type: Literal["lark"] = "lark"
    app_id: str = Field(min_length=1, description="the app's App ID (cli_...) from the developer console")
    app_secret: SecretStr = Field(description="the app's App Secret; use ${LARK_APP_SECRET}")
    mode: Literal["ws", "webhook"] = Field(
        default="ws",
        description="ws: the long connection (no public URL needed); webhook: Lark posts events to "
        "/lark/<bot id>/events on this engine",
    )
    verification_token: SecretStr | None = Field(
        default=None, description="webhook mode: the Verification Token of 'Events and callbacks'"
    )
    encrypt_key: SecretStr | None = Field(
        default=None,
        description="webhook mode: the Encrypt Key; when set, bodies are AES-256-CBC encrypted and "
        "every delivery's X-Lark-Signature is checked",
    )
    app_type: Literal["self", "isv"] = Field(
        default="self",
        description="self: a self-built (custom) app; isv: a store app (app tickets, per-tenant tokens)",
    )
    bot_added_welcome: str | None = Field(
        default=None, description="sent to a group when the bot is added to it (omitted: nothing is sent)"
    )
    stream_replies: bool = Field(
        default=False,
        description="replies are cards, so a streamed answer (an agent) updates one card as the text grows",
    )
    domain: str = Field(
        default="feishu",
        description="feishu (open.feishu.cn), lark (open.larksuite.com), or an http(s) base URL "
        "(a private deployment, or a test server)",
    )
    request_timeout: Duration = Field(default=10.0, gt=0, description="timeout of one open API call")
    stale_after: Duration = Field(
        default=300.0,
        gt=0,
        description="ws mode: no frame from Lark (events or pong) for this long restarts the connection",
    )
    ack_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="ws mode: longest wait for the journal before an event is answered as failed "
        "(Lark then redelivers it)",
    )
    stream_interval: Duration = Field(
        default=0.5, ge=0, description="least time between two updates of one streamed card"
    )
    rate_limits: RateLimits | None = Field(
        default=None,
        description="override Lark's outbound limits (50/s per app, 5/s per chat); for tests and benchmarks",
    )

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        if value not in DOMAINS and not value.startswith(("http://", "https://")):
            raise ValueError("must be feishu, lark, or an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LarkAdapterConfig:
        if self.app_type == "isv" and self.mode != "webhook":
            raise ValueError("store (isv) apps receive events by webhook only: set mode: webhook")
        if self.mode == "webhook" and self.verification_token is None:
            raise ValueError("webhook mode needs verification_token (and encrypt_key if encryption is on)")
        if self.mode == "ws" and (problem := sdk_version_problem()) is not None:
            raise ValueError(problem)
        return self

    @property
    def base_url(self) -> str:
        """The open platform's root, without a trailing slash."""
        return DOMAINS.get(self.domain, self.domain).rstrip("/")
