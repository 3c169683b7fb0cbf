"""``X-Callboard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">``.

The same scheme signs our deliveries and authenticates a receiver's callbacks
(async mode). A receiver checks the HMAC with a constant-time compare and
refuses timestamps older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Callboard-Signature"
#: a callback older (or newer) than this is refused
TOLERANCE = 300.0


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(secret: str, body: bytes, header: str | None, now: float | None = None) -> str | None:
    """None when ``header`` signs ``body`` with ``secret`` recently; else why not."""
    if not header:
        return f"missing {HEADER} header"
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return "signature has no valid t="
    if abs((time.time() if now is None else now) - t) > TOLERANCE:
        return "signature timestamp is too old or in the future"
    expected = sign(secret, body, t).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        return "signature does not match"
    return None
