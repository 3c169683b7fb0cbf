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

    def may_read(self, identity: Identity, chat_id: str) -> bool:
        return identity.owns_private(chat_id) or self.is_member(chat_id, identity.user_id)
