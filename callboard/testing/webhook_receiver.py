"""A webhook receiver for tests and benchmarks: it checks each delivery's
``X-Callboard-Signature`` the way the docs tell receivers to, records it, and
answers as scripted (a status, ``Retry-After``, a JSON body of actions, a
delay). ``callback(url, actions)`` plays an async-mode receiver posting its
results back, signed with the same secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from callboard.testing.server import LocalServer


def verify_signature(secret: str, body: bytes, header: str, tolerance: float = 300.0) -> bool:
    """The receiver-side check, as docs/webhook.md shows it."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded when not None
    retry_after: float | None = None
    delay: float = 0.0


@dataclass
class Delivery:
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    verified: bool
    status: int = 200
    at: float = field(default_factory=time.time)


class WebhookReceiver(LocalServer):
    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret
        self.answers: deque[Answer] = deque()
        self.default = Answer()
        self.deliveries: list[Delivery] = []
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def script(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        await self.serve(app)
        return self

    async def stop(self) -> None:
        await self.stop_serving()

    async def _hook(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        header = request.headers.get("X-Callboard-Signature", "")
        verified = self.secret is not None and verify_signature(self.secret, raw, header)
        answer = self.answers.popleft() if self.answers else self.default
        if answer.delay:
            await asyncio.sleep(answer.delay)
        status = answer.status if verified or self.secret is None else 401
        delivery = Delivery(orjson.loads(raw), raw, dict(request.headers), verified, status)
        async with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()
        headers = {"Retry-After": f"{answer.retry_after:g}"} if answer.retry_after is not None else {}
        if status == 401:
            return web.json_response({"error": "bad signature"}, status=401)
        if answer.body is None:
            return web.Response(status=status, headers=headers)
        return web.Response(
            status=status, body=orjson.dumps(answer.body), content_type="application/json", headers=headers
        )

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.deliveries) >= count), timeout)
        return self.deliveries

    async def callback(self, url: str, actions: list[dict[str, Any]], secret: str | None = None) -> int:
        """POST ``{"actions": [...]}`` to an async delivery's callback URL, signed."""
        body = orjson.dumps({"actions": actions})
        key = secret if secret is not None else self.secret or ""
        t = int(time.time())
        digest = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Callboard-Signature": f"t={t},v1={digest}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            return response.status
