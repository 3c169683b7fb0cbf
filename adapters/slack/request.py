"""The Web API transport: slack_sdk's ``AsyncWebClient`` on one shared aiohttp
session, paced by Slack's per-method tiers, with errors classified.

slack_sdk's own retry handlers are off: the outbound path is the one place
that retries (with ``Retry-After`` and backoff), so a call is never repeated
by two layers. Each method has a token bucket sized by its tier (1, 20, 50
or 100 calls a minute, bursting up to that many); ``chat.postMessage`` is
paced per channel by the outbound path instead, as Slack paces it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from callboard.adapters.slack.errors import api_error
from callboard.engine.clock import Clock, sleep

#: calls per minute by tier (https://docs.slack.dev/apis/web-api/rate-limits)
TIER_1, TIER_2, TIER_3, TIER_4 = 1, 20, 50, 100

#: the methods this adapter calls, by tier; a method not listed gets tier 3
TIERS: dict[str, int] = {
    "auth.test": TIER_4,
    "apps.connections.open": TIER_1,
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.getPermalink": TIER_4,
    "chat.postEphemeral": TIER_4,
    "chat.scheduleMessage": TIER_3,
    "conversations.history": TIER_3,
    "conversations.replies": TIER_3,
    "conversations.info": TIER_3,
    "conversations.list": TIER_2,
    "conversations.members": TIER_4,
    "conversations.rename": TIER_2,
    "conversations.kick": TIER_3,
    "conversations.leave": TIER_3,
    "conversations.join": TIER_3,
    "users.info": TIER_4,
    "users.list": TIER_2,
    "reactions.add": TIER_3,
    "reactions.remove": TIER_3,
    "pins.add": TIER_2,
    "pins.remove": TIER_2,
    "files.info": TIER_4,
    "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "views.open": TIER_4,
    "views.publish": TIER_4,
}
#: paced elsewhere (per channel, by the outbound path)
UNPACED = frozenset({"chat.postMessage"})


def _page(
    make: Callable[[AsyncWebClient, str | None], Awaitable[AsyncSlackResponse]],
    cursor: str | None,
    client: AsyncWebClient,
) -> Awaitable[AsyncSlackResponse]:
    return make(client, cursor)


class _Bucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.tokens = self.burst
        self.updated = now

    def reserve(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class SlackWeb:
    """One bot's Web API client (``token`` is the bot token)."""

    def __init__(self, token: str, base_url: str, timeout: float, clock: Clock, *, paced: bool) -> None:
        self.token = token
        self.base_url = base_url
        self.timeout = timeout
        self.clock = clock
        self.paced = paced
        self._buckets: dict[str, _Bucket] = {}
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None

    @property
    def client(self) -> AsyncWebClient:
        """The SDK client, made on first use (its aiohttp session needs the running loop)."""
        if self._client is None or self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
            self._client = AsyncWebClient(
                token=self.token,
                base_url=self.base_url,
                timeout=int(max(1, self.timeout)),
                session=self._session,
                retry_handlers=[],
            )
        return self._client

    @property
    def session(self) -> aiohttp.ClientSession:
        self.client  # noqa: B018 - makes the session
        assert self._session is not None
        return self._session

    async def close(self) -> None:
        session, self._session, self._client = self._session, None, None
        if session is not None:
            await session.close()

    async def _pace(self, method: str) -> None:
        if not self.paced or method in UNPACED:
            return
        now = self.clock.now()
        bucket = self._buckets.get(method)
        if bucket is None:
            bucket = self._buckets[method] = _Bucket(TIERS.get(method, TIER_3), now)
        wait = bucket.reserve(now)
        if wait > 0:
            await sleep(self.clock, wait)

    async def call(
        self, method: str, make: Callable[[AsyncWebClient], Awaitable[AsyncSlackResponse]]
    ) -> dict[str, Any]:
        """Run one call (``make`` builds it on the SDK client); its answer's data,
        or ``SlackAPIError``."""
        await self._pace(method)
        try:
            response = await make(self.client)
        except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise api_error(exc, method) from None
        data = response.data
        return data if isinstance(data, dict) else {"data": data}

    async def api(self, method: str, **params: Any) -> dict[str, Any]:
        """Any Web API method by name. The parameters go as a form, which every method
        takes (several read methods refuse JSON bodies); objects and lists inside it
        (``view``, ``blocks``) are JSON text, as Slack expects in a form."""
        form = {
            key: orjson.dumps(value).decode() if isinstance(value, dict | list) else value
            for key, value in params.items()
            if value is not None
        }
        return await self.call(method, lambda c: c.api_call(method, data=form))

    async def pages(
        self,
        method: str,
        key: str,
        make: Callable[[AsyncWebClient, str | None], Awaitable[AsyncSlackResponse]],
    ) -> AsyncIterator[Any]:
        """Every item of ``key`` across the pages of a cursor-paginated method."""
        cursor: str | None = None
        while True:
            data = await self.call(method, functools.partial(_page, make, cursor))
            for item in data.get(key) or []:
                yield item
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return
