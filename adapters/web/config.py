"""``adapter:`` block of a web-chat bot."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from callboard.adapters.base import AdapterConfig


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
