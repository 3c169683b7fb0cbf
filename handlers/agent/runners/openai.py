"""``openai``: any OpenAI-compatible chat-completions endpoint (OpenAI, DeepSeek,
Qwen/DashScope compatible mode, Ollama, vLLM, llama.cpp server, LM Studio),
streamed over server-sent events or not, with function tools."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from callboard.engine.units import Duration
from callboard.handlers.agent.http import HttpClient, check_status, sse_events, transport_error
from callboard.handlers.agent.runner import Completion, DeltaFn, RunnerError, RunRequest, ToolCall, Usage

SERVICE = "the model endpoint"


class OpenAIRunnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runner: Literal["openai"] = Field(default="openai", exclude=True)
    base_url: str = Field(description="e.g. http://127.0.0.1:11434/v1 (Ollama) or https://api.openai.com/v1")
    api_key: SecretStr | None = Field(default=None, description="sent as a Bearer token; never logged")
    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")
    request_timeout: Duration = Field(default=60.0, gt=0, description="connect and read timeout of one call")
    max_connections: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="open connections to the endpoint; more calls wait their turn",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")


class OpenAIRunner:
    name: ClassVar[str] = "openai"
    config_type: ClassVar[type[BaseModel]] = OpenAIRunnerConfig
    supports_tools: ClassVar[bool] = True

    def __init__(self, config: OpenAIRunnerConfig) -> None:
        self.config = config
        self.secret = config.api_key.get_secret_value() if config.api_key is not None else None
        headers = {"Content-Type": "application/json", **config.headers}
        if config.api_key is not None and config.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.http = HttpClient(config.request_timeout, headers, config.max_connections)
        self.url = f"{config.base_url}/chat/completions"

    async def close(self) -> None:
        await self.http.close()

    def _body(self, request: RunRequest) -> bytes:
        config = self.config
        body: dict[str, Any] = {"model": config.model, "messages": request.messages, "stream": request.stream}
        if request.tools:
            body["tools"] = request.tools
        if config.temperature is not None:
            body["temperature"] = config.temperature
        if config.max_tokens is not None:
            body["max_tokens"] = config.max_tokens
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        if request.user:
            body["user"] = request.user
        return orjson.dumps(body)

    async def complete(self, request: RunRequest, on_delta: DeltaFn) -> Completion:
        try:
            async with self.http.session.post(self.url, data=self._body(request)) as response:
                await check_status(response, SERVICE, self.secret)
                if request.stream:
                    return await self._read_stream(response, on_delta)
                return _parse_whole(await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_error(SERVICE, error) from None

    async def _read_stream(self, response: aiohttp.ClientResponse, on_delta: DeltaFn) -> Completion:
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage = Usage()
        async for chunk in sse_events(response):
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                raise RunnerError(f"{SERVICE} sent an error in the stream", transient=True)
            if isinstance(chunk.get("usage"), dict):
                usage = _usage(chunk["usage"])
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if piece:
                    text.append(piece)
                    await on_delta(piece)
                for part in delta.get("tool_calls") or ():
                    slot = calls.setdefault(
                        int(part.get("index", 0)), {"id": "", "name": "", "arguments": ""}
                    )
                    slot["id"] = part.get("id") or slot["id"]
                    function = part.get("function") or {}
                    slot["name"] += function.get("name") or ""
                    slot["arguments"] += function.get("arguments") or ""
        tool_calls = [
            ToolCall(id=c["id"] or f"call_{i}", name=c["name"], arguments=c["arguments"] or "{}")
            for i, c in sorted(calls.items())
        ]
        return Completion(text="".join(text), tool_calls=tool_calls, usage=usage)


def _usage(data: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
    )


def _parse_whole(body: bytes) -> Completion:
    try:
        data = orjson.loads(body)
        message = data["choices"][0]["message"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise RunnerError(f"{SERVICE} sent an answer without choices", transient=True) from None
    calls = [
        ToolCall(
            id=c.get("id") or f"call_{i}",
            name=(c.get("function") or {}).get("name", ""),
            arguments=(c.get("function") or {}).get("arguments") or "{}",
        )
        for i, c in enumerate(message.get("tool_calls") or ())
    ]
    usage = _usage(data["usage"]) if isinstance(data.get("usage"), dict) else Usage()
    return Completion(text=message.get("content") or "", tool_calls=calls, usage=usage)
