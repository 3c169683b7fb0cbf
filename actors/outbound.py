"""OutboundActor: every send of a bot goes through here.

One ``OutboundLane`` child per chat sends that chat's messages in order, one
at a time, while lanes of different chats proceed independently. Lanes share
the bot's token bucket (the platform's per-bot limit) and keep their chat's
own interval. Transient errors retry with the engine's ``Backoff``, honouring the
platform's ``retry_after``; a permanent error is recorded on the receipt and not
retried. Every wait (rate limits, retries) is on the bot's clock, so tests move
it with a ``ManualClock``.
Each accepted send is recorded as a receipt in the journal before the
handler hears back; a replayed run skips sends whose receipt exists.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from callboard.actors.messages import SendRequest
from callboard.actors.runtime import BotCounters, Fenced
from callboard.engine.actor import Actor
from callboard.engine.clock import Clock, sleep
from callboard.engine.journal_store import JournalStore
from callboard.engine.platform import MessageResult, NotSupportedError, PlatformAPI, RateLimits, SendError
from callboard.engine.ref import ActorRef
from callboard.engine.signals import Terminated
from callboard.engine.supervision import Backoff

log = logging.getLogger("callboard.outbound")

T = TypeVar("T")

MAX_ATTEMPTS = 8
#: between attempts of a send the platform did not accept (unless it said how long)
RETRY_BACKOFF = Backoff(min=0.5, max=60.0, factor=2.0, jitter=0.2)
#: an idle lane stops after this long, or twice its chat interval if longer
LANE_IDLE_TTL = 1.0


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``burst``; ``rate`` 0 = unlimited."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.tokens = self.burst
        self.updated = now

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before using it."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def chat_interval(limits: RateLimits, chat_type: str) -> float:
    if chat_type == "group" and limits.per_group_chat_per_minute > 0:
        return 60.0 / limits.per_group_chat_per_minute
    if chat_type != "group" and limits.per_private_chat_per_second > 0:
        return 1.0 / limits.per_private_chat_per_second
    return 0.0


class Outlet:
    """A bot's sending machinery: its platform API, the bot-wide token bucket,
    each chat's next allowed send time, retries with backoff, and receipts.

    A session sends to its own chat through here inline, in its own turn (its
    sends are already one at a time and in order); sends to any other chat go
    to that chat's ``OutboundLane``. Both share this object, so limits hold
    across them. Plain shared state on the loop thread: no locks.
    """

    def __init__(
        self,
        bot_id: str,
        api: PlatformAPI,
        journal: JournalStore,
        counters: BotCounters,
        limits: RateLimits,
        clock: Clock,
    ) -> None:
        self.bot_id = bot_id
        self.api = api
        self.journal = journal
        self.counters = counters
        self.limits = limits
        self.clock = clock
        self.bucket = TokenBucket(limits.per_bot_per_second, limits.per_bot_per_second, clock.now())
        self.next_send: dict[str, float] = {}
        #: cluster mode: (bot, chat type, chat id) -> True when this node lost that chat's lease
        self.fence: Callable[[str, str, str], bool] | None = None

    async def deliver(self, request: SendRequest) -> MessageResult:
        """Send with rate limits and retries; record the receipt."""
        journal = self.journal
        chat = f"{request.chat_type}:{request.chat_id}"
        if self.fence is not None and self.fence(self.bot_id, request.chat_type, request.chat_id):
            raise Fenced(f"{self.bot_id} {chat}: this node no longer holds the chat's partition lease")
        idempotent = self.api.idempotent_sends
        if request.check_receipt and not idempotent:
            receipt = await journal.receipt(request.receipt_key)
            if receipt is not None and receipt.status == "sent":
                self.counters.receipts_skipped += 1
                return MessageResult(message_id=receipt.message_id)
        try:
            result = await self.invoke(request.chat_type, chat, self._call, request)
        except NotSupportedError:
            raise
        except (SendError, TimeoutError, OSError) as exc:
            self._record_failure(request, chat, exc)
            raise
        self.counters.sends += 1
        if not idempotent:
            journal.store_receipt(request.receipt_key, self.bot_id, request.run_id, chat, result.message_id)
        return result

    async def invoke(
        self, chat_type: str | None, chat: str | None, call: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """Run one platform call, ``call(*args)``, under the bot's rate limit (and ``chat``'s
        interval when given), retrying transient errors with backoff and
        honouring the platform's ``retry_after``. (``args`` rather than a closure: a
        send takes this path for every reply.)"""
        attempt = 0
        while True:
            if chat is not None and chat_type is not None:
                wait = self._rate_wait(chat_type, chat)
            else:
                wait = self.bucket.reserve(self.clock.now())
            if wait > 0:
                await sleep(self.clock, wait)
            try:
                return await call(*args)
            except NotSupportedError:
                raise
            except SendError as exc:
                if exc.permanent or attempt + 1 >= MAX_ATTEMPTS:
                    raise
                error: Exception = exc
                delay = exc.retry_after if exc.retry_after is not None else RETRY_BACKOFF.delay(attempt)
            except (TimeoutError, OSError) as exc:
                if attempt + 1 >= MAX_ATTEMPTS:
                    raise
                error = exc
                delay = RETRY_BACKOFF.delay(attempt)
            attempt += 1
            self.counters.send_retries += 1
            log.warning(
                "%s %s: platform call failed (%s); retry %d in %.2fs",
                self.bot_id,
                chat or "-",
                error,
                attempt,
                delay,
            )
            await sleep(self.clock, delay)

    async def _call(self, request: SendRequest) -> MessageResult:
        api = self.api
        key = request.receipt_key
        if request.reply_to is not None:
            return await api.reply_message(
                request.reply_to, request.chain, quote_origin=True, idempotency_key=key
            )
        return await api.send_message(
            request.chat_type,
            request.chat_id,
            request.chain,
            thread_id=request.thread_id,
            idempotency_key=key,
        )

    def _rate_wait(self, chat_type: str, chat: str) -> float:
        """Reserve this send's place under the bot's and the chat's limits: how long to wait."""
        now = self.clock.now()
        wait = self.bucket.reserve(now)
        interval = chat_interval(self.limits, chat_type)
        if interval:
            allowed = self.next_send.get(chat, now)
            wait = max(wait, allowed - now)
            self.next_send[chat] = max(now, allowed) + interval
            if len(self.next_send) > 4096:  # forget chats whose next send is already allowed
                self.next_send = {c: t for c, t in self.next_send.items() if t > now}
        return wait

    def _record_failure(self, request: SendRequest, chat: str, error: Exception) -> None:
        self.counters.send_failures += 1
        log.error("%s %s: send failed for good: %s", self.bot_id, chat, error)
        self.journal.store_receipt(
            request.receipt_key,
            self.bot_id,
            request.run_id,
            chat,
            None,
            status="failed",
            error=str(error)[:500],
        )


async def settle(request: SendRequest, outlet: Outlet) -> None:
    """Deliver ``request`` and resolve its future either way."""
    future = request.future
    assert future is not None
    try:
        result = await outlet.deliver(request)
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
        return
    if not future.done():
        future.set_result(result)


class OutboundLane(Actor):
    """Sends to one chat that come from outside that chat's session, in order."""

    mailbox_capacity = None

    def __init__(self, outlet: Outlet) -> None:
        self.outlet = outlet

    async def on_start(self) -> None:
        limits = self.outlet.limits
        interval = max(chat_interval(limits, "group"), chat_interval(limits, "private"))
        self.context.set_receive_timeout(max(LANE_IDLE_TTL, 2 * interval))

    async def receive(self, message: Any) -> Any:
        if not isinstance(message, SendRequest):
            raise TypeError(f"unexpected message {message!r}")
        await settle(message, self.outlet)


class OutboundActor(Actor):
    """Owns the bot's ``Outlet`` and a lane per chat for sends that do not come
    from that chat's own session."""

    mailbox_capacity = None

    def __init__(self, outlet: Outlet) -> None:
        self.outlet = outlet
        self.lanes: dict[str, ActorRef] = {}
        self.lane_chat: dict[ActorRef, str] = {}
        self.lane_seq = 0

    async def receive(self, message: Any) -> Any:
        if isinstance(message, SendRequest):
            try:
                lane = self._lane(message.chat_type, message.chat_id)
            except Exception as exc:
                if message.future is not None and not message.future.done():
                    message.future.set_exception(exc)
                raise
            lane.tell(message)
        elif isinstance(message, Terminated):
            gone = self.lane_chat.pop(message.ref, None)
            if gone is not None and self.lanes.get(gone) is message.ref:
                del self.lanes[gone]
        else:
            raise TypeError(f"unexpected message {message!r}")

    def _lane(self, chat_type: str, chat_id: str) -> ActorRef:
        chat = f"{chat_type}:{chat_id}"
        lane = self.lanes.get(chat)
        if lane is None or not lane.is_alive:
            self.lane_seq += 1
            lane = self.context.spawn(
                OutboundLane, f"{chat.replace('/', '%2F')}#{self.lane_seq}", self.outlet
            )
            self.context.watch(lane)
            self.lanes[chat] = lane
            self.lane_chat[lane] = chat
        return lane
