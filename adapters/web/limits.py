"""Rate limits on what web chat clients send: per connection and per user.

A frame over a limit is refused with a ``busy`` error saying when to retry; it is not
stored, so nothing is acknowledged that the engine did not take.
"""

from __future__ import annotations

from callboard.adapters.web.config import RateLimit
from callboard.engine.clock import Clock


class TokenBucket:
    """``burst`` tokens, refilled at ``per_second``; one token per frame."""

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(self, limit: RateLimit, clock: Clock) -> None:
        self.rate = limit.per_second
        self.burst = float(limit.burst)
        self.tokens = self.burst
        self.clock = clock
        self.stamp = clock.now()

    def wait(self, now: float) -> float:
        """Seconds until a token is free at ``now`` (0: one is free now)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0


class UserLimits:
    """One bucket per user while they have a connection open (so the table is bounded
    by the connections, not by every user ever seen)."""

    def __init__(self, limit: RateLimit, clock: Clock) -> None:
        self.limit = limit
        self.clock = clock
        self._buckets: dict[str, tuple[TokenBucket, int]] = {}

    def attach(self, user_id: str) -> TokenBucket:
        bucket, count = self._buckets.get(user_id) or (TokenBucket(self.limit, self.clock), 0)
        self._buckets[user_id] = (bucket, count + 1)
        return bucket

    def detach(self, user_id: str) -> None:
        bucket, count = self._buckets[user_id]
        if count <= 1:
            del self._buckets[user_id]
        else:
            self._buckets[user_id] = (bucket, count - 1)


def admit(connection: TokenBucket, user: TokenBucket) -> float:
    """Take one token from both buckets, or from neither if one is empty; returns the wait
    (0: admitted). Both read one clock: this runs for every frame a client sends."""
    now = connection.clock.now()
    wait = max(connection.wait(now), user.wait(now))
    if wait == 0.0:
        connection.take()
        user.take()
    return wait
