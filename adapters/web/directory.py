"""Users, groups and members of the web chat, and who may read which chat.

Reading a chat is allowed to the owner of a private chat and to the members of a group.
Groups (name, members, mutes) are kept in the journal through ``AdapterStore``, so they
survive a restart and are shared by the nodes of a cluster. Each change (join, leave,
mute, unmute) is appended to the group's change log (the adapter's stored output under a
chat no client may read, ``LOG``: per-chat sequence numbers order the changes of all
nodes, so none is lost to another); a checkpoint (the group as of a log position) in the
adapter's state spares replaying the whole log, and is moved on by every read that
replayed something. A log of group names serves ``get_group_list``. Users are learnt
from what signed-in clients do and from the members of the groups read.

Checks read a local cache and never wait: ``ensure`` says what to read first (a group
not cached; in cluster mode also the group of a user it would refuse, as they may have
joined through another node, and before a send one read over ``STALE_AFTER`` ago, for a
mute made elsewhere), and the gateway awaits it before checking a frame. A change is
applied to the cache at once (the user's next frame sees it) and written through, per
group in order; the join's ack waits for it. In cluster mode each written change is also
announced to the other nodes (``peers``), which drop their copy of the group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from callboard.adapters.base import AdapterStore
from callboard.adapters.web.identity import Identity
from callboard.engine.entities import Group, GroupMember, User

log = logging.getLogger("callboard.web")

#: the outbox chats of the change logs start with this (group ``g``: ``LOG + g``; the
#: group names: ``LOG``): ``may_read`` refuses them, so no client subscribes to one
LOG = "\x1eweb-directory/"
#: the adapter-state keys of the checkpoints
GROUP_KEY = "web.group:"
INDEX_KEY = "web.groups"
#: log rows read per query
PAGE = 500
#: what a peer notice starts with (the outbox's notices start with ``[``)
PEER_NOTICE = b"directory\n"
#: cluster mode: seconds a cached group is trusted for a send or edit before it is read
#: again; a mute made on another node whose notice was lost is enforced within this
STALE_AFTER = 5.0
#: cluster mode: a check that would refuse reads the group again, at most this often
#: for one user and group
RECHECK_AFTER = 1.0
#: groups read and found empty (no members, no mutes) kept at most; past this they are
#: dropped (a client naming random groups costs reads, never memory)
MAX_EMPTY = 10_000

#: a change: ``{"op": "join" | "leave" | "mute" | "unmute", "user": id, ...}``
Change = dict[str, Any]


def _empty(chat_id: str) -> dict[str, Any]:
    """A group's record: its name, members {user id: [nickname, joined_at]} and mutes
    {user id: wall-clock end, or None until unmuted}."""
    return {"name": chat_id, "members": {}, "muted": {}}


def apply(record: dict[str, Any], change: Change) -> bool:
    """Apply one change to a group's record; True when it changed anything."""
    user, members, muted = change.get("user"), record["members"], record["muted"]
    op = change.get("op")
    if op == "join":
        known = members.get(user)
        name = change.get("name") or record["name"]
        if known is not None and known[0] == change["nickname"] and record["name"] == name:
            return False
        record["name"] = name
        members[user] = [change["nickname"], known[1] if known else change["at"]]
        return True
    if op == "leave":
        if user not in members and user not in muted:
            return False
        members.pop(user, None)
        muted.pop(user, None)
        return True
    if op == "mute":
        now = time.time()
        record["muted"] = {u: end for u, end in muted.items() if end is None or end > now}
        record["muted"][user] = change["until"]
        return True
    if op == "unmute":
        return muted.pop(user, False) is not False
    return False  # not a change of ours


def _apply_name(names: dict[str, Any], change: Change) -> bool:
    group, name = change.get("group"), change.get("name")
    if not isinstance(group, str) or names.get(group) == name:
        return False
    names[group] = name
    return True


class Directory:
    def __init__(self, store: AdapterStore) -> None:
        self.store = store
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {}
        #: per group, its record as last read, with the changes still being written applied
        self._records: dict[str, dict[str, Any]] = {}
        #: per group, time.monotonic() of the last read (cluster staleness)
        self._read_at: dict[str, float] = {}
        self._unwritten: dict[str, list[Change]] = {}
        #: per group, the last read or write queued (they run one at a time, in order)
        self._tail: dict[str, asyncio.Future[None]] = {}
        #: per group, a read queued and not started (concurrent misses share it)
        self._reading: dict[str, asyncio.Future[None]] = {}
        #: per group, its last change queued and not yet stored
        self._writing: dict[str, asyncio.Future[None]] = {}
        #: cluster mode: (group, user) -> time.monotonic() of the last re-read for a refusal
        self._rechecked: dict[tuple[str, str], float] = {}
        self._empty: set[str] = set()
        #: cluster mode: announces a changed group to the other nodes (None on one node)
        self.peers: Callable[[bytes], None] | None = None

    # ------------------------------------------------------------------ checks (cache only)

    def user(self, identity: Identity) -> User:
        user = self.users.get(identity.user_id)
        if user is None or user.nickname != identity.name:
            user = User(id=identity.user_id, nickname=identity.name or identity.user_id)
            self.users[identity.user_id] = user
        return user

    def group(self, chat_id: str, name: str = "") -> Group:
        """The group (named ``name`` from now on, when given: the next join stores it)."""
        group = self.groups.get(chat_id)
        if group is None or (name and group.name != name):
            group = Group(id=chat_id, name=name or chat_id)
            self.groups[chat_id] = group
        return group

    def is_member(self, chat_id: str, user_id: str) -> bool:
        record = self._records.get(chat_id)
        return record is not None and user_id in record["members"]

    def muted_for(self, chat_id: str, user_id: str) -> float:
        """Seconds the user stays muted in the group (0: not muted; inf: until unmuted)."""
        record = self._records.get(chat_id)
        if record is None or user_id not in record["muted"]:
            return 0.0
        until = record["muted"][user_id]
        if until is None:
            return float("inf")
        return max(0.0, float(until) - time.time())

    def may_read(self, identity: Identity, chat_id: str) -> bool:
        if chat_id.startswith(LOG):
            return False
        return identity.owns_private(chat_id) or self.is_member(chat_id, identity.user_id)

    # ------------------------------------------------------------------ reading

    def ensure(self, chat_id: str, user_id: str, sending: bool) -> Awaitable[None] | None:
        """What to await before checking ``user_id``'s frame for group ``chat_id`` (None:
        check at once). A group not cached is read; in cluster mode also one where the
        user is not a member (they may have joined through another node), at most every
        ``RECHECK_AFTER`` seconds, and before a send or edit one read over ``STALE_AFTER``
        seconds ago (a mute made on another node)."""
        read_at = self._read_at.get(chat_id)
        if read_at is None:
            return self.refresh(chat_id)
        if self.peers is None:
            return None  # one node: every change went through this cache
        now = time.monotonic()
        if sending and now - read_at > STALE_AFTER:
            return self.refresh(chat_id)
        if not self.is_member(chat_id, user_id):
            rechecked = self._rechecked.get((chat_id, user_id), 0.0)
            if now - rechecked > RECHECK_AFTER:
                if len(self._rechecked) > MAX_EMPTY:
                    self._rechecked = {k: t for k, t in self._rechecked.items() if now - t <= RECHECK_AFTER}
                self._rechecked[(chat_id, user_id)] = now
                return self.refresh(chat_id)
        return None

    def refresh(self, chat_id: str) -> asyncio.Future[None]:
        """Read the group again (after the writes queued before; a read queued and not
        started yet serves)."""
        pending = self._reading.get(chat_id)
        if pending is not None and self._tail.get(chat_id) is pending:
            return pending
        return _track(self._reading, chat_id, self._queue(chat_id, lambda: self._read(chat_id)))

    async def _read(self, chat_id: str) -> None:
        try:
            record = await self._replay(GROUP_KEY + chat_id, LOG + chat_id, _empty(chat_id), apply)
        except BaseException:
            self._forget(chat_id)  # unsure now: read again before the next check
            raise
        self._cache(chat_id, record)

    async def _replay(
        self,
        key: str,
        chat: str,
        empty: dict[str, Any],
        step: Callable[[dict[str, Any], Change], bool],
    ) -> dict[str, Any]:
        """The checkpoint under ``key`` with the changes logged in ``chat`` since applied;
        the checkpoint moves on when there were any (the last save wins: at worst a later
        read replays a little more)."""
        saved = await self.store.load_adapter_state(key) or {}
        record, seq = saved.get("record") or empty, int(saved.get("seq", 0))
        last = seq
        while True:
            rows = await self.store.read_outbox(chat, last, limit=PAGE)
            for last, change in rows:  # noqa: B007 - last: the position read up to
                step(record, change)
            if len(rows) < PAGE:
                break
        if last != seq:
            await self.store.save_adapter_state(key, {"record": record, "seq": last})
        return record

    def _cache(self, chat_id: str, record: dict[str, Any]) -> None:
        """Cache what the store holds, with the changes not yet written applied."""
        for change in self._unwritten.get(chat_id, ()):
            apply(record, change)
        self._records[chat_id] = record
        self._read_at[chat_id] = time.monotonic()
        if record["members"] or record["muted"]:
            self._empty.discard(chat_id)
        else:
            self._empty.add(chat_id)
            if len(self._empty) > MAX_EMPTY:
                for empty in self._empty:
                    self._forget(empty)
                self._empty.clear()
        group = self.groups.get(chat_id)
        if group is None or group.name != record["name"]:
            self.groups[chat_id] = Group(id=chat_id, name=record["name"])
        for user_id, (nickname, _) in record["members"].items():
            self.users.setdefault(user_id, User(id=user_id, nickname=nickname))

    async def record(self, chat_id: str) -> dict[str, Any]:
        """The group's record, read when not cached (for the API's queries)."""
        if chat_id not in self._records:
            await self.refresh(chat_id)
        return self._records[chat_id]

    async def all_groups(self) -> dict[str, str]:
        """Every group's name, by id, as stored."""
        return await self._replay(INDEX_KEY, LOG, {}, _apply_name)

    def members(self, chat_id: str) -> list[GroupMember]:
        """The cached members (``record`` first)."""
        record = self._records.get(chat_id) or _empty(chat_id)
        return [
            GroupMember(
                user=self.users.get(user_id) or User(id=user_id, nickname=nickname),
                group_id=chat_id,
                joined_at=joined_at,
            )
            for user_id, (nickname, joined_at) in record["members"].items()
        ]

    # ------------------------------------------------------------------ changes (write-through)

    def join(self, chat_id: str, user: User) -> asyncio.Future[None]:
        name = self.group(chat_id).name
        record = self._records.get(chat_id)
        if record is None or not record["members"] or record["name"] != name:
            names = self.store.append_outbox(LOG, {"group": chat_id, "name": name})  # for get_group_list
            names.add_done_callback(_retrieve)
        change = {"op": "join", "user": user.id, "nickname": user.nickname, "at": time.time(), "name": name}
        return self._change(chat_id, change)

    def leave(self, chat_id: str, user_id: str) -> asyncio.Future[None]:
        return self._change(chat_id, {"op": "leave", "user": user_id})

    def mute(self, chat_id: str, user_id: str, seconds: float) -> asyncio.Future[None]:
        """``seconds`` 0: until ``unmute``. The end is wall-clock time, so it holds across
        a restart and on other nodes (as far as their clocks agree)."""
        until = time.time() + seconds if seconds > 0 else None
        return self._change(chat_id, {"op": "mute", "user": user_id, "until": until})

    def unmute(self, chat_id: str, user_id: str) -> asyncio.Future[None]:
        return self._change(chat_id, {"op": "unmute", "user": user_id})

    def writing(self, chat_id: str) -> asyncio.Future[None]:
        """Done once the group's last change is stored; fails if it could not be."""
        return self._writing.get(chat_id) or _done()

    def _change(self, chat_id: str, change: Change) -> asyncio.Future[None]:
        """Apply ``change`` to the cache now, and queue its write; the future fails when
        it could not be stored (the group is then read again before it is next checked)."""
        record = self._records.get(chat_id)
        if record is not None and not apply(record, change):
            return self.writing(chat_id)  # nothing new (a page's join on every connect)
        self._unwritten.setdefault(chat_id, []).append(change)
        return _track(self._writing, chat_id, self._queue(chat_id, lambda: self._write(chat_id, change)))

    async def _write(self, chat_id: str, change: Change) -> None:
        try:
            await self.store.append_outbox(LOG + chat_id, change)
        except BaseException:
            self._written(chat_id, change)
            self._forget(chat_id)  # read again before the next check
            raise
        self._written(chat_id, change)
        if self.peers is not None:
            self.peers(PEER_NOTICE + chat_id.encode())
        self.refresh(chat_id)  # what other nodes changed meanwhile, and a checkpoint

    def _written(self, chat_id: str, change: Change) -> None:
        unwritten = self._unwritten[chat_id]
        unwritten.remove(change)
        if not unwritten:
            del self._unwritten[chat_id]

    def _forget(self, chat_id: str) -> None:
        """Drop the cached copy: the group is read again before its next check."""
        self._records.pop(chat_id, None)
        self._read_at.pop(chat_id, None)

    def from_peer(self, data: bytes) -> bool:
        """A peer notice (another node changed a group): forget the copy here. False
        when ``data`` is not one."""
        if not data.startswith(PEER_NOTICE):
            return False
        chat_id = data[len(PEER_NOTICE) :].decode()
        self._forget(chat_id)
        self._reading.pop(chat_id, None)  # a read under way may predate the change
        return True

    def _queue(self, chat_id: str, step: Callable[[], Awaitable[None]]) -> asyncio.Future[None]:
        """Run ``step`` after the reads and writes queued before for the group."""
        before = self._tail.get(chat_id)

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])
            await step()

        task = asyncio.ensure_future(run())
        self._tail[chat_id] = task
        task.add_done_callback(lambda done: self._finished(chat_id, done))
        return task

    def _finished(self, chat_id: str, task: asyncio.Future[None]) -> None:
        if self._tail.get(chat_id) is task:
            del self._tail[chat_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("web directory: group %s could not be read or stored: %r", chat_id, error)


def _retrieve(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and (error := done.exception()) is not None:
        log.warning("web directory: a group's name could not be stored: %r", error)


def _track(
    table: dict[str, asyncio.Future[None]], key: str, task: asyncio.Future[None]
) -> asyncio.Future[None]:
    """Keep ``task`` in ``table`` under ``key`` until it is done."""
    table[key] = task

    def untrack(done: asyncio.Future[None]) -> None:
        if table.get(key) is done:
            del table[key]

    task.add_done_callback(untrack)
    return task


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done
