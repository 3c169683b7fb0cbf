"""Platform-neutral entities: users, groups, members, and the message chain.

These are msgspec Structs, not pydantic models: one is built for every event on
the hot path, and a Struct costs a fraction of a validated model to build,
encode and collect (``gc=False``: they hold no reference cycles, so the cyclic
collector never scans them). Construction does not validate: adapters pass the
right types (ids are ``str`` everywhere, Telegram's integers converted by the
adapter), and decoding (``msgspec``) validates every field. The fields a
platform sent that we do not model are kept in ``raw`` and survive a round trip.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import msgspec

#: ids are strings everywhere, so session keys and journal rows never mix ``1`` and ``"1"``
ID = str


class Entity(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """Base of every wire entity. ``raw``: the platform fields we do not model."""

    raw: dict[str, Any] = {}


class ChatType(enum.StrEnum):
    PRIVATE = "private"
    GROUP = "group"


class MemberRole(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class User(Entity, kw_only=True):
    id: ID
    nickname: str = ""
    username: str | None = None
    avatar_url: str | None = None
    is_bot: bool = False
    remark: str | None = None


class Group(Entity, kw_only=True):
    id: ID
    name: str = ""
    description: str | None = None
    member_count: int | None = None
    avatar_url: str | None = None
    owner_id: ID | None = None


class GroupMember(Entity, kw_only=True):
    user: User
    group_id: ID
    role: MemberRole = MemberRole.MEMBER
    display_name: str | None = None
    joined_at: float | None = None
    title: str | None = None


# ---------------------------------------------------------------------- message chain


class ComponentBase(Entity, tag_field="type", kw_only=True):
    """Base of the chain's components; ``type`` (the tag) names the kind on the wire."""

    type: ClassVar[str]


class Plain(ComponentBase, tag="Plain", kw_only=True):
    text: str


class At(ComponentBase, tag="At", kw_only=True):
    target: ID
    display: str | None = None


class AtAll(ComponentBase, tag="AtAll", kw_only=True):
    pass


class Image(ComponentBase, tag="Image", kw_only=True):
    url: str | None = None
    file_id: str | None = None
    data: bytes | None = None
    mime: str | None = None
    width: int | None = None
    height: int | None = None


class Voice(ComponentBase, tag="Voice", kw_only=True):
    url: str | None = None
    file_id: str | None = None
    data: bytes | None = None
    duration: float | None = None
    mime: str | None = None


class File(ComponentBase, tag="File", kw_only=True):
    name: str = ""
    url: str | None = None
    file_id: str | None = None
    data: bytes | None = None
    size: int | None = None
    mime: str | None = None


class Quote(ComponentBase, tag="Quote", kw_only=True):
    message_id: ID
    sender_id: ID | None = None
    origin: list[Component] = []


class Face(ComponentBase, tag="Face", kw_only=True):
    face_id: ID
    name: str | None = None


class Forward(ComponentBase, tag="Forward", kw_only=True):
    """A forwarded message (or, with ``nodes``, a merged forward)."""

    from_chat_id: ID | None = None
    from_message_id: ID | None = None
    from_user: User | None = None
    nodes: list[list[Component]] = []


class Source(ComponentBase, tag="Source", kw_only=True):
    message_id: ID
    timestamp: float | None = None


class PlatformComponent(ComponentBase, tag="Platform", kw_only=True):
    """Content with no neutral equivalent; the adapter that made it can render it."""

    platform: str
    component_type: str
    data: dict[str, Any] = {}


Component = Plain | At | AtAll | Image | Voice | File | Quote | Face | Forward | Source | PlatformComponent

COMPONENT_TYPES: tuple[type[ComponentBase], ...] = (
    Plain,
    At,
    AtAll,
    Image,
    Voice,
    File,
    Quote,
    Face,
    Forward,
    Source,
    PlatformComponent,
)
for _c in COMPONENT_TYPES:
    _c.type = str(_c.__struct_config__.tag)

C = TypeVar("C", bound=ComponentBase)


class MessageChain(msgspec.Struct, gc=False):
    """An ordered list of components; ``text`` joins the plain parts."""

    parts: list[Component] = []

    @classmethod
    def of(cls, *parts: Component | str) -> MessageChain:
        """A chain from components and strings (strings become ``Plain``)."""
        return cls([Plain(text=p) if isinstance(p, str) else p for p in parts])

    @property
    def text(self) -> str:
        return "".join([c.text for c in self.parts if type(c) is Plain])

    def components(self, kind: type[C]) -> list[C]:
        return [c for c in self.parts if isinstance(c, kind)]

    def __iter__(self) -> Iterator[Component]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)


def to_builtins(value: Any) -> Any:
    """An entity (or chain) as JSON-ready dicts and lists, e.g. to embed in a frame."""
    return msgspec.to_builtins(value)
