"""The webhook's cryptography: AES-256-CBC bodies and request signatures.

With an Encrypt Key set in the console, Lark posts ``{"encrypt": base64(iv ||
ciphertext)}``: AES-256-CBC with key SHA-256(encrypt key), a random 16-byte IV,
PKCS#7 padding. Every delivery is signed: ``X-Lark-Signature`` is the hex
SHA-256 of timestamp + nonce + encrypt key + raw body, compared in constant
time. ``encrypt`` exists for the test platform and for tools that post events.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from Crypto.Cipher import AES

BLOCK = 16


class DecryptError(ValueError):
    """The body is not something the configured key encrypted."""


def _key(encrypt_key: str) -> bytes:
    return hashlib.sha256(encrypt_key.encode()).digest()


def decrypt(encrypt_key: str, encrypted: str) -> bytes:
    try:
        data = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError("the encrypted body is not base64") from None
    if len(data) < 2 * BLOCK or len(data) % BLOCK:
        raise DecryptError("the encrypted body has the wrong length")
    plain = AES.new(_key(encrypt_key), AES.MODE_CBC, data[:BLOCK]).decrypt(data[BLOCK:])
    pad = plain[-1]
    if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise DecryptError("the body does not decrypt with the configured encrypt_key")
    return plain[:-pad]


def encrypt(encrypt_key: str, plain: bytes) -> str:
    pad = BLOCK - len(plain) % BLOCK
    iv = os.urandom(BLOCK)
    body = AES.new(_key(encrypt_key), AES.MODE_CBC, iv).encrypt(plain + bytes([pad]) * pad)
    return base64.b64encode(iv + body).decode()


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def signature_ok(timestamp: str, nonce: str, encrypt_key: str, body: bytes, given: str) -> bool:
    expected = signature(timestamp, nonce, encrypt_key, body)
    return hmac.compare_digest(expected.encode(), given.encode())
