"""``n8n``: an n8n workflow behind a Webhook (or Chat) trigger. We POST the
session id, the newest user turn and our system prompt; the workflow answers
JSON with ``output`` (the Chat trigger's convention) or ``text``, or plain text."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from callboard.engine.units import Duration
from callboard.handlers.agent.http import HttpClient, check_status, transport_error
from callboard.handlers.agent.runner import Completion, DeltaFn, RunRequest

SERVICE = "the n8n workflow"


class N8nRunnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runner: Literal["n8n"] = Field(default="n8n", exclude=True)
    url: str = Field(description="the workflow's webhook URL")
    auth_header: str = Field(default="Authorization", description="header carrying the credential")
    auth_value: SecretStr | None = Field(default=None, description="e.g. 'Bearer ...'; never logged")
    request_timeout: Duration = Field(default=120.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value


class N8nRunner:
    name: ClassVar[str] = "n8n"
    config_type: ClassVar[type[BaseModel]] = N8nRunnerConfig
    supports_tools: ClassVar[bool] = False

    def __init__(self, config: N8nRunnerConfig) -> None:
        self.config = config
        self.secret = config.auth_value.get_secret_value() if config.auth_value is not None else None
        headers = {"Content-Type": "application/json"}
        if config.auth_value is not None:
            headers[config.auth_header] = config.auth_value.get_secret_value()
        self.http = HttpClient(config.request_timeout, headers)

    async def close(self) -> None:
        await self.http.close()

    async def complete(self, request: RunRequest, on_delta: DeltaFn) -> Completion:
        query = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
        body: dict[str, Any] = {
            "sessionId": request.conversation.setdefault("n8n_session", request.user or "callboard"),
            "chatInput": query,
            "system": system,
        }
        try:
            async with self.http.session.post(self.config.url, data=orjson.dumps(body)) as response:
                await check_status(response, SERVICE, self.secret)
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_error(SERVICE, error) from None
        text = _answer(raw)
        if text:
            await on_delta(text)
        return Completion(text=text)


def _answer(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace").strip()
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        for key in ("output", "text", "answer"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return ""
