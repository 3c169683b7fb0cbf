"""Slack's request signatures (v0), checked before anything else is read.

``X-Slack-Signature`` is ``v0=`` + hex HMAC-SHA256 of ``v0:<timestamp>:<body>``
keyed with the app's signing secret; ``X-Slack-Request-Timestamp`` must be
within five minutes of now, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac

#: how far a request's timestamp may be from now, either way (Slack's recommendation)
MAX_SKEW = 300.0


class BadSignature(Exception):
    """Why a request is refused (said in the 401 answer; never echoes a value)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    return "v0=" + digest.hexdigest()


def verify(secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float) -> None:
    """Raise ``BadSignature`` unless the request is signed with ``secret`` and fresh."""
    if not timestamp or not signature:
        raise BadSignature("missing X-Slack-Request-Timestamp or X-Slack-Signature")
    try:
        sent = int(timestamp)
    except ValueError:
        raise BadSignature("X-Slack-Request-Timestamp is not a unix time") from None
    if abs(now - sent) > MAX_SKEW:
        raise BadSignature("stale request: the timestamp is more than 5 minutes from now")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode()):
        raise BadSignature("the signature does not match the signing secret")
