"""Users, groups and members of the web chat, and who may read which chat.

Learnt from what signed-in clients do and kept in memory: after a restart, group member
lists start empty until people join again (the page re-sends its ``join`` on connect,
which the journal answers as a duplicate). Reading a chat is allowed to the owner of a
private chat and to the members of a group.
"""

from __future__ import annotations

import time

from callboard.adapters.web.identity import Identity
from callboard.engine.entities import Group, GroupMember, User


class Directory:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.groups: dict[str, Group] = {}
        self.members: dict[str, dict[str, GroupMember]] = {}
        #: (group, user) -> time.monotonic() when the mute ends (inf: until unmuted)
        self.muted: dict[tuple[str, str], float] = {}

    def user(self, identity: Identity) -> User:
        user = self.users.get(identity.user_id)
        if user is None or user.nickname != identity.name:
            user = User(id=identity.user_id, nickname=identity.name or identity.user_id)
            self.users[identity.user_id] = user
        return user

    def group(self, chat_id: str, name: str = "") -> Group:
        group = self.groups.get(chat_id)
        if group is None or (name and group.name != name):
            group = Group(id=chat_id, name=name or chat_id)
            self.groups[chat_id] = group
        return group

    def join(self, chat_id: str, user: User) -> None:
        members = self.members.setdefault(chat_id, {})
        if user.id not in members:
            members[user.id] = GroupMember(user=user, group_id=chat_id, joined_at=time.time())

    def leave(self, chat_id: str, user_id: str) -> None:
        self.members.get(chat_id, {}).pop(user_id, None)

    def is_member(self, chat_id: str, user_id: str) -> bool:
        return user_id in self.members.get(chat_id, {})

    def mute(self, chat_id: str, user_id: str, seconds: float) -> None:
        """``seconds`` 0: until ``unmute``."""
        self.muted[(chat_id, user_id)] = time.monotonic() + seconds if seconds > 0 else float("inf")

    def unmute(self, chat_id: str, user_id: str) -> None:
        self.muted.pop((chat_id, user_id), None)

    def muted_for(self, chat_id: str, user_id: str) -> float:
        """Seconds the user stays muted in the group (0: not muted)."""
        until = self.muted.get((chat_id, user_id))
        if until is None:
            return 0.0
        left = until - time.monotonic()
        if left <= 0:
            del self.muted[(chat_id, user_id)]
            return 0.0
        return left

    def may_read(self, identity: Identity, chat_id: str) -> bool:
        return identity.owns_private(chat_id) or self.is_member(chat_id, identity.user_id)
