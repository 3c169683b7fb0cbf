"""The webhook handler's ``handler_config``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from callboard.engine.units import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetriesConfig(_Strict):
    count: int = Field(default=3, ge=0, le=50, description="retries after the first attempt")
    interval: Duration = Field(default=1.0, gt=0, description="first retry delay; doubles, with jitter")
    max_interval: Duration = Field(default=60.0, gt=0, description="longest delay between attempts")


class WebhookConfig(_Strict):
    handler_type: Literal["webhook"] = Field(default="webhook", exclude=True)
    url: str = Field(description="where events are POSTed")
    secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the X-Callboard-Signature header; never logged"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    timeout: Duration = Field(default=10.0, gt=0, description="one attempt")
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    response_actions: bool = Field(default=False, description="run the actions the receiver answers with")
    mode: Literal["sync", "async"] = Field(
        default="sync", description="async: the receiver answers 202 and POSTs actions to callback_url later"
    )
    callback_base: str | None = Field(
        default=None,
        description="async mode: this server's URL as the receiver reaches it, e.g. https://bots.example.com",
    )

    @model_validator(mode="after")
    def _async_needs_callback_base(self) -> WebhookConfig:
        if self.mode == "async" and not self.callback_base:
            raise ValueError("mode async needs callback_base (this server's URL as the receiver reaches it)")
        if self.mode == "async" and self.secret is None:
            raise ValueError("mode async needs a secret: callbacks are authenticated by their signature")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value

    @field_validator("headers")
    @classmethod
    def _no_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = {"idempotency-key", "x-callboard-signature", "content-type"}
        for name in value:
            if name.lower() in reserved:
                raise ValueError(f"header {name!r} is set by callboard")
        return value
