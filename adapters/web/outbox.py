"""Bot output: rendered, stored in the bot's outbox under a per-chat ``seq``, then pushed.

Storing before pushing is what lets a client that reconnects and subscribes with the
last ``seq`` it saw receive every frame it missed. A repeated idempotency key (a send
replayed after a crash) stores and pushes nothing new.

In cluster mode the node that answers a chat (its partition's owner) may not be the
one its sockets are connected to: each pushed frame is also handed to the bot's web
adapter on the other nodes (``peers``), which push it to their own subscribers. The
client's per-chat ``seq`` check drops a frame it already has; a frame lost on the
way is read from the stored output on the next subscribe, as after any reconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from callboard.adapters.base import AdapterStore
from callboard.adapters.web.client import WebClient
from callboard.adapters.web.protocol import Subscribed, Typing, encode
from callboard.engine.entities import MessageChain, to_builtins

#: backlog rows read per query while a client subscribes
PAGE = 500


def message(chat_id: str, message_id: str, chain: MessageChain, reply_to: str | None) -> dict[str, Any]:
    return {
        "op": "message",
        "chat_id": chat_id,
        "message_id": message_id,
        "text": chain.text,
        "components": to_builtins(chain.parts),
        "reply_to": reply_to,
    }


def edited(chat_id: str, message_id: str, chain: MessageChain) -> dict[str, Any]:
    return {
        "op": "edited",
        "chat_id": chat_id,
        "message_id": message_id,
        "text": chain.text,
        "components": to_builtins(chain.parts),
    }


class Outbox:
    """Who is subscribed to which chat, and the store-then-push path."""

    def __init__(self, store: AdapterStore) -> None:
        self.store = store
        self.subscribers: dict[str, set[WebClient]] = {}
        #: per chat, the last stored frame still waiting for its fsync
        self._tail: dict[str, asyncio.Future[Any]] = {}
        #: cluster mode: hands a pushed frame to the other nodes (None on one node)
        self.peers: Callable[[bytes], None] | None = None

    async def publish(
        self, chat_id: str, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Store, then push to the chat's subscribers once durable. Returns at once,
        before the commit: the sender (a session) goes on, and the done mark of a run
        that only replied joins the reply's transaction. Pushes happen in commit order,
        so a chat's frames stay in order."""
        stored = self.store.append_outbox(chat_id, payload, idempotency_key)
        if not stored.done():
            self._tail[chat_id] = stored
        stored.add_done_callback(lambda done: self._push(done, chat_id))
        return payload

    def _push(self, stored: asyncio.Future[tuple[int, dict[str, Any], bool]], chat_id: str) -> None:
        if self._tail.get(chat_id) is stored:
            del self._tail[chat_id]
        if stored.cancelled() or stored.exception() is not None:
            return  # never durable: never shown (a replay stores and pushes it again)
        seq, body, created = stored.result()
        if not created:
            return  # stored and pushed before
        data = encode(body)
        for client in list(self.subscribers.get(chat_id, ())):
            client.deliver(chat_id, seq, data)
        if self.peers is not None:
            self.peers(orjson.dumps([chat_id, seq]) + b"\n" + data)

    def typing(self, chat_id: str) -> None:
        """Not stored, but pushed after the chat's stored frames still waiting for their fsync."""
        tail = self._tail.get(chat_id)
        if tail is not None:
            tail.add_done_callback(lambda _: self._push_now(chat_id, encode(Typing(chat_id=chat_id))))
        else:
            self._push_now(chat_id, encode(Typing(chat_id=chat_id)))

    def _push_now(self, chat_id: str, data: bytes) -> None:
        for client in list(self.subscribers.get(chat_id, ())):
            client.push(data)
        if self.peers is not None:
            self.peers(orjson.dumps([chat_id, 0]) + b"\n" + data)

    def from_peer(self, data: bytes) -> None:
        """A frame another node pushed (``seq`` 0: not stored, such as typing)."""
        head, _, frame = data.partition(b"\n")
        chat_id, seq = orjson.loads(head)
        for client in list(self.subscribers.get(chat_id, ())):
            if seq:
                client.deliver(chat_id, seq, frame)
            else:
                client.push(frame)

    def follow(self, client: WebClient, chat: str) -> None:
        """Live frames of ``chat`` go to ``client`` from now on."""
        client.chats.add(chat)
        self.subscribers.setdefault(chat, set()).add(client)

    def unfollow_user(self, chat: str, user_id: str) -> None:
        """A user left ``chat``: none of their connections get its frames any more."""
        followers = self.subscribers.get(chat, set())
        for client in [c for c in followers if c.identity.user_id == user_id]:
            followers.discard(client)
            client.chats.discard(chat)

    def forget(self, client: WebClient) -> None:
        for chat in client.chats:
            followers = self.subscribers.get(chat)
            if followers is not None:
                followers.discard(client)
                if not followers:
                    del self.subscribers[chat]

    async def subscribe(self, client: WebClient, chat: str, since: int) -> None:
        """Send ``client`` the stored frames after ``since``, then live ones: registered
        first with live frames held, so nothing stored meanwhile is missed or doubled."""
        client.backfilling[chat] = []
        self.follow(client, chat)
        last = since
        try:
            while True:
                rows = await self.store.read_outbox(chat, last, limit=PAGE)
                for seq, payload in rows:
                    client.push(encode(payload))
                    last = seq
                if len(rows) < PAGE:
                    break
        finally:
            held = client.backfilling.pop(chat, [])
        client.sent[chat] = last
        for seq, data in held:
            client.deliver(chat, seq, data)
        client.push(encode(Subscribed(chat_id=chat, seq=client.sent[chat])))
