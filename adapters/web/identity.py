"""Who is on a web chat connection: server-issued sessions, the ``auth`` hook, ``Origin``.

A session is a token ``<payload>.<signature>`` (base64url JSON, HMAC-SHA256 with the
session secret: the configured one, or the per-fleet secret the host keeps). It names the
bot, the user id, a display name and an expiry. A user's private chats are
``<user id>:<name>``; group chat ids contain no ':'. It reaches the server as the
``callboard_session`` cookie (browsers) or an ``Authorization: Bearer`` header (programs),
and the user id of every event comes from it, never from a frame.

How a session is issued depends on ``auth.mode``: ``anonymous`` gives anyone a fresh user
id; ``shared_secret`` issues one for the user a backend names when it presents the secret;
``signed_token`` issues one for the user named in a token the embedding site signed with
the secret (same format, fields ``sub``, optional ``name``, ``exp``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from callboard.adapters.web.config import WebAdapterConfig

COOKIE = "callboard_session"
#: user ids a site may name: no ':' (private chat ids are ``<user>`` or ``<user>:<name>``)
USER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class AuthError(Exception):
    """Credentials were missing or wrong: the request gets 401 with this reason."""


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    name: str
    #: anonymous users may rename themselves; signed-in users keep the name they were given
    anonymous: bool

    def owns_private(self, chat_id: str) -> bool:
        """A private chat belongs to one user: its id is ``<user id>:<name>``. Group ids
        have no ':', so the two kinds of chat can never name the same chat."""
        size = len(self.user_id)  # checked for every frame: no prefix string built
        return len(chat_id) > size + 1 and chat_id[size] == ":" and chat_id.startswith(self.user_id)


class _Claims(msgspec.Struct, kw_only=True):
    b: str  # bot
    u: str  # user id
    n: str = ""  # display name
    a: bool = False  # anonymous
    e: float  # expiry, unix time


class _SiteClaims(msgspec.Struct, kw_only=True):
    sub: str
    name: str = ""
    exp: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: bytes) -> str:
    """``<payload>.<signature>``: how both our sessions and a site's tokens look."""
    body = _b64(payload)
    return f"{body}.{_b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


def verify(secret: bytes, token: str) -> bytes:
    """The payload of a token signed with ``secret``; ``AuthError`` otherwise."""
    body, _, signature = token.partition(".")
    expected = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(signature, expected):
        raise AuthError("the token's signature does not match")
    try:
        return _unb64(body)
    except ValueError:
        raise AuthError("the token is malformed") from None


class Sessions:
    """Issues and checks one bot's sessions."""

    def __init__(
        self,
        bot_id: str,
        config: WebAdapterConfig,
        fleet_secret: Callable[[], bytes],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.bot_id = bot_id
        self.config = config
        configured = config.session_secret
        self._secret = configured.get_secret_value().encode() if configured is not None else None
        self._fleet_secret = fleet_secret
        self._wall = wall
        auth = config.auth.secret
        self._auth_secret = auth.get_secret_value().encode() if auth is not None else b""

    @property
    def anonymous_allowed(self) -> bool:
        return self.config.auth.mode == "anonymous"

    def _key(self) -> bytes:
        if self._secret is None:
            self._secret = self._fleet_secret()
        return self._secret

    def issue(self, identity: Identity) -> str:
        claims = _Claims(
            b=self.bot_id,
            u=identity.user_id,
            n=identity.name,
            a=identity.anonymous,
            e=self._wall() + self.config.session_ttl,
        )
        return sign(self._key(), msgspec.json.encode(claims))

    def anonymous(self, name: str = "") -> Identity:
        user_id = "guest-" + os.urandom(8).hex()
        return Identity(user_id=user_id, name=name[:64] or "guest", anonymous=True)

    def check(self, token: str) -> Identity:
        """The identity a session token carries; ``AuthError`` if forged, expired or another bot's."""
        try:
            claims = msgspec.json.decode(verify(self._key(), token), type=_Claims)
        except msgspec.DecodeError:
            raise AuthError("the session token is malformed") from None
        if claims.b != self.bot_id:
            raise AuthError("the session belongs to another bot")
        if claims.e < self._wall():
            raise AuthError("the session has expired")
        if claims.a and not self.anonymous_allowed:
            raise AuthError("anonymous sessions are not accepted by this bot")
        return Identity(user_id=claims.u, name=claims.n, anonymous=claims.a)

    def from_request(self, request: web.Request) -> Identity | None:
        """The session a request presents (bearer header first, then the cookie), or None."""
        token = bearer(request) or request.cookies.get(COOKIE)
        return self.check(token) if token else None

    def from_site_token(self, token: str) -> Identity:
        """``signed_token`` mode: the user a token signed by the embedding site names."""
        if self.config.auth.mode != "signed_token":
            raise AuthError("this bot does not take site-signed tokens")
        try:
            claims = msgspec.json.decode(verify(self._auth_secret, token), type=_SiteClaims)
        except msgspec.DecodeError:
            raise AuthError("the site token is malformed (needs sub and exp)") from None
        if claims.exp < self._wall():
            raise AuthError("the site token has expired")
        return Identity(user_id=_user_id(claims.sub), name=claims.name[:64] or claims.sub, anonymous=False)

    def from_shared_secret(self, presented: str | None, user_id: str, name: str) -> Identity:
        """``shared_secret`` mode: a backend that knows the secret names the user."""
        if self.config.auth.mode != "shared_secret":
            raise AuthError("this bot does not take a shared secret")
        if presented is None or not hmac.compare_digest(presented.encode(), self._auth_secret):
            raise AuthError("the shared secret does not match")
        return Identity(user_id=_user_id(user_id), name=name[:64] or user_id, anonymous=False)


def _user_id(value: str) -> str:
    if not USER_ID.match(value):
        raise AuthError("a user id is 1-64 letters, digits, '_', '.', '@' or '-'")
    return value


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def origin_allowed(request: web.Request, allowed: list[str]) -> bool:
    """A browser's ``Origin`` must be the page's own (same host and port) or listed.
    Programs that send no ``Origin`` are not browsers a page could have hijacked."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
