"""``adapter:`` block of a web-chat bot."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from callboard.adapters.base import AdapterConfig
from callboard.engine.units import Duration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebAuthConfig(_Strict):
    """Who may chat. ``anonymous``: anyone gets a fresh user id (the default).
    ``shared_secret``: a trusted backend that presents ``secret`` names the user when it asks
    for a session. ``signed_token``: the page is given a token the embedding site signed
    with ``secret`` (HMAC-SHA256; see docs/web-protocol.md) naming the user."""

    mode: Literal["anonymous", "shared_secret", "signed_token"] = "anonymous"
    secret: SecretStr | None = Field(default=None, description="required unless mode is anonymous")

    @model_validator(mode="after")
    def _secret_when_needed(self) -> WebAuthConfig:
        if self.mode != "anonymous" and (self.secret is None or len(self.secret.get_secret_value()) < 16):
            raise ValueError(f"auth mode {self.mode} needs a secret of at least 16 characters")
        return self


class RateLimit(_Strict):
    per_second: float = Field(gt=0, description="sustained frames per second")
    burst: int = Field(ge=1, description="frames allowed at once before the rate applies")


class WebAdapterConfig(AdapterConfig):
    type: Literal["web"] = "web"
    title: str = Field(default="callboard", description="shown on the chat page")
    max_frame_bytes: int = Field(default=64 * 1024, ge=1024, description="larger frames get an error frame")
    max_in_flight: int = Field(
        default=1000, ge=1, description="unacknowledged frames per connection before reading pauses"
    )
    send_queue: int = Field(
        default=2000, ge=10, description="frames queued to a slow client before it is dropped"
    )
    auth: WebAuthConfig = Field(default_factory=WebAuthConfig)
    session_secret: SecretStr | None = Field(
        default=None,
        description="signs web chat sessions; unset: a random per-fleet secret kept next to the journal",
    )
    session_ttl: Duration = Field(
        default=30 * 86400, gt=0, description="how long a web chat session stays valid"
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to open the websocket (e.g. https://example.com); "
        "empty: the page's own origin only",
    )
    rate_per_connection: RateLimit = Field(
        default_factory=lambda: RateLimit(per_second=20, burst=60),
        description="event frames one websocket may send; beyond it frames get a busy error",
    )
    rate_per_user: RateLimit = Field(
        default_factory=lambda: RateLimit(per_second=40, burst=120),
        description="event frames one user may send over all their connections",
    )
