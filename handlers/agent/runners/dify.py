"""``dify``: a Dify app over its chat-messages API. Dify keeps the conversation
itself: we send the newest user turn and the conversation id we keep per
session; the app's own prompt and tools apply (ours are not sent)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from callboard.engine.units import Duration
from callboard.handlers.agent.http import HttpClient, check_status, sse_events, transport_error
from callboard.handlers.agent.runner import Completion, DeltaFn, RunnerError, RunRequest, Usage

SERVICE = "Dify"


class DifyRunnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runner: Literal["dify"] = Field(default="dify", exclude=True)
    base_url: str = Field(description="e.g. https://api.dify.ai/v1")
    api_key: SecretStr = Field(description="the app's API key; never logged")
    inputs: dict[str, str] = Field(default_factory=dict, description="the app's input variables")
    request_timeout: Duration = Field(default=120.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class DifyRunner:
    name: ClassVar[str] = "dify"
    config_type: ClassVar[type[BaseModel]] = DifyRunnerConfig
    supports_tools: ClassVar[bool] = False

    def __init__(self, config: DifyRunnerConfig) -> None:
        self.config = config
        self.secret = config.api_key.get_secret_value()
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {config.api_key.get_secret_value()}",
        }
        self.http = HttpClient(config.request_timeout, headers)
        self.url = f"{config.base_url}/chat-messages"

    async def close(self) -> None:
        await self.http.close()

    async def complete(self, request: RunRequest, on_delta: DeltaFn) -> Completion:
        query = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
        body: dict[str, Any] = {
            "inputs": self.config.inputs,
            "query": query,
            "response_mode": "streaming" if request.stream else "blocking",
            "user": request.user or "callboard",
        }
        conversation = request.conversation.get("dify_conversation_id")
        if conversation:
            body["conversation_id"] = conversation
        try:
            async with self.http.session.post(self.url, data=orjson.dumps(body)) as response:
                if response.status == 404 and conversation:
                    request.conversation.pop("dify_conversation_id", None)  # expired: start a new one
                    raise RunnerError(f"{SERVICE} forgot the conversation", transient=True, retry_after=0)
                await check_status(response, SERVICE, self.secret)
                if request.stream:
                    return await self._read_stream(response, request, on_delta)
                data = orjson.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_error(SERVICE, error) from None
        except orjson.JSONDecodeError:
            raise RunnerError(f"{SERVICE} sent invalid JSON", transient=True) from None
        _remember(request, data)
        return Completion(text=str(data.get("answer") or ""), usage=_usage(data))

    async def _read_stream(
        self, response: aiohttp.ClientResponse, request: RunRequest, on_delta: DeltaFn
    ) -> Completion:
        text: list[str] = []
        usage = Usage()
        async for item in sse_events(response):
            if not isinstance(item, dict):
                continue
            _remember(request, item)
            kind = item.get("event")
            if kind in ("message", "agent_message"):
                piece = str(item.get("answer") or "")
                if piece:
                    text.append(piece)
                    await on_delta(piece)
            elif kind == "message_end":
                usage = _usage(item)
            elif kind == "error":
                raise RunnerError(
                    f"{SERVICE} reported an error: {str(item.get('message'))[:200]}", transient=False
                )
        return Completion(text="".join(text), usage=usage)


def _remember(request: RunRequest, data: dict[str, Any]) -> None:
    conversation = data.get("conversation_id")
    if conversation:
        request.conversation["dify_conversation_id"] = str(conversation)


def _usage(data: dict[str, Any]) -> Usage:
    usage = (data.get("metadata") or {}).get("usage") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
