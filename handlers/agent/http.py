"""HTTP plumbing the runners share: one client session per runner, status codes
mapped to ``RunnerError``, and a server-sent-events reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from callboard.handlers.agent.runner import RunnerError


class HttpClient:
    """An aiohttp session opened on first use (inside the running loop) and
    opened again after ``close`` (a bot restarted by its supervisor)."""

    def __init__(self, timeout: float, headers: dict[str, str] | None = None, connections: int = 100) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._headers = headers or {}
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections)
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers=self._headers, connector=connector
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


async def check_status(response: aiohttp.ClientResponse, service: str, secret: str | None = None) -> None:
    """Raise ``RunnerError`` for a non-2xx answer: 429 and 5xx are transient.
    The service's own error text is kept (cut short), with ``secret`` (the
    credential we sent) masked: some services echo a rejected key."""
    if response.status < 300:
        return
    detail = ""
    try:
        body = await response.read()
        parsed = orjson.loads(body)
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = error.get("message") if isinstance(error, dict) else None
        detail = f": {str(message)[:200]}" if message else ""
        if secret:
            detail = detail.replace(secret, "***")
    except (orjson.JSONDecodeError, aiohttp.ClientError, UnicodeDecodeError):
        pass
    retry_after = _retry_after(response.headers.get("Retry-After"))
    transient = response.status == 429 or response.status >= 500
    raise RunnerError(
        f"{service} answered HTTP {response.status}{detail}", transient=transient, retry_after=retry_after
    )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def transport_error(service: str, error: BaseException) -> RunnerError:
    """A connection failure or timeout: transient, named without its URL's secrets."""
    kind = "timed out" if isinstance(error, TimeoutError) else f"failed ({type(error).__name__})"
    return RunnerError(f"{service} request {kind}", transient=True)


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[Any]:
    """The JSON ``data:`` payloads of a server-sent-events stream, until ``[DONE]``."""
    buffer: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith("data:"):
            buffer.append(line[5:].lstrip())
            continue
        if line or not buffer:
            continue  # comments, event names, keep-alives
        data = "\n".join(buffer)
        buffer.clear()
        if data == "[DONE]":
            return
        try:
            yield orjson.loads(data)
        except orjson.JSONDecodeError:
            raise RunnerError("the stream sent invalid JSON", transient=True) from None
    if buffer and buffer[0] != "[DONE]":
        try:
            yield orjson.loads("\n".join(buffer))
        except orjson.JSONDecodeError:
            raise RunnerError("the stream sent invalid JSON", transient=True) from None
