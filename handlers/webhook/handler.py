"""The webhook handler: POST the run's events, signed, retried; run the actions
the receiver answers with.

Body: ``{"event", "events", "bot", "session", "delivery_id"}`` (plus
``callback_url`` in async mode). Headers: the configured ones, ``Idempotency-Key``
(the delivery id: the same across retries, replays and manual retries) and
``X-Callboard-Signature`` when a secret is set. Connection errors, timeouts,
429 (its ``Retry-After`` honoured) and 5xx are retried with exponential backoff
and jitter; any other answer is final. A delivery that exhausts its retries
fails the run: the session records it, it is listed at
``/api/bots/{id}/failed`` and can be retried from there or ``callboard retry``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiohttp
import orjson

from callboard.engine.clock import sleep
from callboard.engine.events import encode_event
from callboard.engine.supervision import Backoff
from callboard.handlers.context import HandlerContext, RunFailed
from callboard.handlers.webhook.actions import run_actions
from callboard.handlers.webhook.config import WebhookConfig
from callboard.handlers.webhook.signature import HEADER, sign

USER_AGENT = "callboard-webhook/1"
#: where an async receiver POSTs its actions (served by ``callboard.actors.runs``)
CALLBACK_PREFIX = "/api/webhooks/"


class DeliveryFailed(Exception):
    """One attempt failed; ``retryable`` says whether another may succeed."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retryable = retryable
        self.retry_after = retry_after


def delivery_id(ctx: HandlerContext) -> str:
    """Stable for one run and rule: the Idempotency-Key a receiver dedupes on."""
    return f"{ctx.bot_id}.{ctx.run_id}.{ctx.handler_index}"


class WebhookHandler:
    kind: ClassVar[str] = "webhook"
    busy: ClassVar[str] = "queue"

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.backoff = Backoff(
            min=config.retries.interval,
            max=max(config.retries.interval, config.retries.max_interval),
            factor=2.0,
            jitter=0.2,
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def body(self, ctx: HandlerContext) -> bytes:
        events = [orjson.Fragment(encode_event(event)) for event in ctx.events]
        session = ctx.session
        payload: dict[str, Any] = {
            "event": events[-1],
            "events": events,
            "bot": {"id": ctx.bot_id, "adapter": ctx.event.adapter},
            "session": {"chat_type": session.chat_type, "chat_id": session.chat_id, "thread": session.thread},
            "delivery_id": delivery_id(ctx),
        }
        if self.config.mode == "async" and self.config.callback_base:
            base = self.config.callback_base.rstrip("/")
            payload["callback_url"] = f"{base}{CALLBACK_PREFIX}{delivery_id(ctx)}"
        return orjson.dumps(payload)

    async def handle(self, ctx: HandlerContext) -> None:
        body = self.body(ctx)
        key = delivery_id(ctx)
        retries = self.config.retries.count
        attempt = 0
        while True:
            try:
                answer = await self._attempt(body, key)
                break
            except DeliveryFailed as exc:
                if not exc.retryable or attempt >= retries:
                    ctx.count("webhook_failures", 1)
                    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                    raise RunFailed(f"webhook delivery {key} failed after {tries}: {exc}") from None
                delay = self.backoff.delay(attempt)
                if exc.retry_after is not None:  # the receiver's word, within our longest interval
                    delay = min(exc.retry_after, self.backoff.max)
                attempt += 1
                ctx.count("webhook_retries", 1)
                ctx.log.warning("webhook %s: %s; retry %d in %.2fs", key, exc, attempt, delay)
                await sleep(ctx.clock, delay)
        ctx.count("webhook_deliveries", 1)
        if self.config.response_actions and self.config.mode == "sync" and answer is not None:
            await self.run_actions(ctx, answer.get("actions", []) if isinstance(answer, dict) else None)

    async def run_actions(self, ctx: HandlerContext, actions: Any) -> None:
        """Run the receiver's actions; errors are recorded on the run, the rest still run."""
        errors = await run_actions(ctx, actions if actions is not None else [])
        if errors:
            ctx.count("webhook_action_errors", len(errors))
            ctx.record_errors(errors)

    async def _attempt(self, body: bytes, key: str) -> Any:
        config = self.config
        headers = {
            **config.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "User-Agent": USER_AGENT,
        }
        if config.secret is not None:
            headers[HEADER] = sign(config.secret.get_secret_value(), body)
        try:
            async with self.session.post(config.url, data=body, headers=headers) as response:
                status = response.status
                raw = await response.read()
                retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            raise DeliveryFailed(f"timed out after {config.timeout:g}s", retryable=True) from None
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"connection failed ({type(exc).__name__})", retryable=True) from None
        if status == 429 or status >= 500:
            raise DeliveryFailed(f"receiver answered HTTP {status}", retryable=True, retry_after=retry_after)
        if status >= 300:
            raise DeliveryFailed(f"receiver answered HTTP {status} (not retried)", retryable=False)
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None  # a plain-text answer carries no actions


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
