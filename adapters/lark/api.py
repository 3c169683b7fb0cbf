"""The Lark open API over aiohttp, with access tokens cached per tenant.

Why not lark-oapi's ``Client`` for calls: its token manager fetches tokens with
blocking ``requests`` even on the async path (it would stall the engine's loop),
and its async transport opens a new httpx client, hence a new connection, per
call. This client keeps one pooled aiohttp session, fetches a token once for
all concurrent callers, refreshes it ``REFRESH_BEFORE`` its expiry (on the
engine's clock), and repeats a call once when Lark says the token went bad.

Self-built apps use ``/auth/v3/tenant_access_token/internal``. Store (ISV) apps
need the app ticket Lark pushes every hour (``app_ticket`` event): app access
token = f(app ticket), tenant access token = f(app access token, tenant key),
one per tenant that installed the app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

from callboard.adapters.lark.config import LarkAdapterConfig
from callboard.adapters.lark.errors import (
    BAD_CREDENTIALS,
    TOKEN_INVALID,
    LarkAPIError,
    classify,
)
from callboard.engine.clock import Clock

log = logging.getLogger("callboard.lark")

#: refresh a token this long before Lark says it expires (tokens live 2 h)
REFRESH_BEFORE = 600.0


class CredentialsRejected(LarkAPIError):
    """Lark refused the app id / secret (or ticket): nothing to retry."""


class NoAppTicket(LarkAPIError):
    """A store app has no app ticket yet (Lark pushes one hourly; resend was asked)."""


class _Token:
    __slots__ = ("expires", "value")

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires


class OpenAPI:
    def __init__(self, config: LarkAdapterConfig, clock: Clock) -> None:
        self.config = config
        self.base = config.base_url
        self.clock = clock
        self.app_ticket: str | None = None
        self._secret = config.app_secret.get_secret_value()
        self._tokens: dict[str, _Token] = {}
        self._fetching: dict[str, asyncio.Future[str]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.token_fetches = 0

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ tokens

    def forget_tokens(self) -> None:
        self._tokens.clear()

    async def tenant_token(self, tenant_key: str | None = None) -> str:
        key = f"tenant:{tenant_key or ''}" if self.config.app_type == "isv" else "tenant"
        return await self._token(key, lambda: self._fetch_tenant(tenant_key))

    async def app_token(self) -> str:
        return await self._token("app", self._fetch_app)

    async def _token(self, key: str, fetch: Any) -> str:
        token = self._tokens.get(key)
        if token is not None and self.clock.now() < token.expires:
            return token.value
        pending = self._fetching.get(key)
        if pending is None:  # one fetch for every caller waiting on this token
            pending = self._fetching[key] = asyncio.ensure_future(self._store(key, fetch))
            pending.add_done_callback(lambda _: self._fetching.pop(key, None))
        return await asyncio.shield(pending)

    async def _store(self, key: str, fetch: Any) -> str:
        value, expire = await fetch()
        self.token_fetches += 1
        self._tokens[key] = _Token(value, self.clock.now() + max(float(expire) - REFRESH_BEFORE, 1.0))
        return str(value)

    async def _fetch_tenant(self, tenant_key: str | None) -> tuple[str, int]:
        if self.config.app_type == "self":
            body = {"app_id": self.config.app_id, "app_secret": self._secret}
            data = await self._auth(
                "tenant_access_token", "/open-apis/auth/v3/tenant_access_token/internal", body
            )
        else:
            if not tenant_key:
                raise LarkAPIError(
                    "tenant_access_token", 0, "a store app call needs a tenant", permanent=True
                )
            body = {"app_access_token": await self.app_token(), "tenant_key": tenant_key}
            data = await self._auth("tenant_access_token", "/open-apis/auth/v3/tenant_access_token", body)
        return data["tenant_access_token"], int(data.get("expire", 7200))

    async def _fetch_app(self) -> tuple[str, int]:
        if self.config.app_type == "self":
            body = {"app_id": self.config.app_id, "app_secret": self._secret}
            data = await self._auth("app_access_token", "/open-apis/auth/v3/app_access_token/internal", body)
        else:
            if self.app_ticket is None:
                await self.resend_app_ticket()
                raise NoAppTicket(
                    "app_access_token",
                    0,
                    "no app ticket received yet (asked Lark to resend it)",
                    permanent=False,
                )
            body = {"app_id": self.config.app_id, "app_secret": self._secret, "app_ticket": self.app_ticket}
            data = await self._auth("app_access_token", "/open-apis/auth/v3/app_access_token", body)
        return data["app_access_token"], int(data.get("expire", 7200))

    async def resend_app_ticket(self) -> None:
        body = {"app_id": self.config.app_id, "app_secret": self._secret}
        await self._auth("app_ticket_resend", "/open-apis/auth/v3/app_ticket/resend", body)

    async def _auth(self, call: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data, retry_after = await self._send(call, "POST", path, {}, json=body)
        code = int(data.get("code", -1))
        if code == 0:
            return data
        message = str(data.get("msg", "")) or f"HTTP {status}"
        if code in BAD_CREDENTIALS:
            raise CredentialsRejected(call, code, message, permanent=True, status=status)
        raise classify(call, status, code, message, retry_after)

    # ------------------------------------------------------------------ calls

    async def call(
        self,
        call: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        form: aiohttp.FormData | None = None,
        tenant_key: str | None = None,
    ) -> dict[str, Any]:
        """One API call; returns its ``data`` (``{}`` when there is none)."""
        for attempt in (0, 1):
            token = await self.tenant_token(tenant_key)
            headers = {"Authorization": f"Bearer {token}"}
            status, body, retry_after = await self._send(
                call, method, path, headers, params=params, json=json, form=form
            )
            code = int(body.get("code", -1))
            if code == 0:
                data = body.get("data")
                if isinstance(data, dict):
                    return data
                # a few calls (bot/v3/info) answer beside "data"
                return {k: v for k, v in body.items() if k not in ("code", "msg")}
            if code in TOKEN_INVALID and attempt == 0:
                log.info("lark %s: the access token was refused (code %d); fetching a new one", call, code)
                self._tokens.pop(
                    f"tenant:{tenant_key or ''}" if self.config.app_type == "isv" else "tenant", None
                )
                continue
            raise classify(call, status, code, str(body.get("msg", "")) or f"HTTP {status}", retry_after)
        raise AssertionError("unreachable")

    async def download(
        self, call: str, path: str, *, params: dict[str, Any] | None = None, tenant_key: str | None = None
    ) -> tuple[bytes, str]:
        """A binary resource: (content, content type)."""
        for attempt in (0, 1):
            token = await self.tenant_token(tenant_key)
            try:
                async with self.session().get(
                    self.base + path, params=params, headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    content = await response.read()
                    kind = response.headers.get("Content-Type", "application/octet-stream")
                    status = response.status
                    reset = response.headers.get("x-ogw-ratelimit-reset")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise LarkAPIError(call, 0, f"{type(exc).__name__}: {exc}", permanent=False) from None
            if status == 200 and not kind.startswith("application/json"):
                return content, kind
            body = _json(content)
            code = int(body.get("code", -1))
            if code in TOKEN_INVALID and attempt == 0:
                self._tokens.clear()
                continue
            raise classify(call, status, code, str(body.get("msg", "")) or f"HTTP {status}", _seconds(reset))
        raise AssertionError("unreachable")

    async def _send(
        self,
        call: str,
        method: str,
        path: str,
        headers: dict[str, str],
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        form: aiohttp.FormData | None = None,
    ) -> tuple[int, dict[str, Any], float | None]:
        try:
            async with self.session().request(
                method,
                self.base + path,
                params=params,
                json=json,
                data=form,
                headers=headers,
            ) as response:
                content = await response.read()
                status = response.status
                reset = response.headers.get("x-ogw-ratelimit-reset")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LarkAPIError(call, 0, f"{type(exc).__name__}: {exc}", permanent=False) from None
        body = _json(content)
        if not body and status != 200:
            raise classify(call, status, -1, f"HTTP {status}", _seconds(reset))
        if not body:
            raise LarkAPIError(call, 0, "the answer is not JSON", permanent=False, status=status)
        return status, body, _seconds(reset)


def _json(content: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
