"""Opening a webhook delivery: decryption, the challenge, signature and token.

``open_delivery`` decides what a POST to ``/lark/<bot id>/events`` is before
anything is stored: a URL-verification challenge to answer, an event to take,
or a rejection with the HTTP status and reason to send back. It touches
nothing, so a forged delivery never reaches the journal.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import orjson
from multidict import CIMultiDictProxy

from callboard.adapters.lark.crypto import DecryptError, decrypt, signature_ok

TIMESTAMP = "X-Lark-Request-Timestamp"
NONCE = "X-Lark-Request-Nonce"
SIGNATURE = "X-Lark-Signature"


@dataclass(frozen=True)
class Rejected:
    status: int
    reason: str


@dataclass(frozen=True)
class Challenge:
    challenge: str


@dataclass(frozen=True)
class Delivery:
    payload: dict[str, Any]


def _token_ok(given: Any, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def open_delivery(
    body: bytes,
    headers: CIMultiDictProxy[str] | dict[str, str],
    *,
    verification_token: str,
    encrypt_key: str | None,
) -> Rejected | Challenge | Delivery:
    try:
        outer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Rejected(400, "the body is not JSON")
    if not isinstance(outer, dict):
        return Rejected(400, "the body is not a JSON object")
    payload = outer
    if "encrypt" in outer:
        if not encrypt_key:
            return Rejected(400, "the body is encrypted but this bot has no encrypt_key")
        try:
            payload = orjson.loads(decrypt(encrypt_key, str(outer["encrypt"])))
        except (DecryptError, orjson.JSONDecodeError):
            return Rejected(401, "the body does not decrypt with this bot's encrypt_key")
        if not isinstance(payload, dict):
            return Rejected(400, "the decrypted body is not a JSON object")
    if payload.get("type") == "url_verification":
        if not _token_ok(payload.get("token"), verification_token):
            return Rejected(401, "wrong verification token")
        return Challenge(str(payload.get("challenge", "")))
    if encrypt_key:
        timestamp, nonce = headers.get(TIMESTAMP), headers.get(NONCE)
        given = headers.get(SIGNATURE)
        if not timestamp or not nonce or not given:
            return Rejected(401, "missing X-Lark-Signature (or its timestamp and nonce)")
        if not signature_ok(timestamp, nonce, encrypt_key, body, given):
            return Rejected(401, "bad X-Lark-Signature")
    header = payload.get("header")
    token = header.get("token") if isinstance(header, dict) else payload.get("token")
    if not _token_ok(token, verification_token):
        return Rejected(401, "wrong verification token")
    if not isinstance(header, dict) and not isinstance(payload.get("event"), dict):
        return Rejected(400, "not a Lark event (no header or event)")
    return Delivery(payload)
