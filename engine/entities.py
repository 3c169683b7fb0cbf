"""Platform-neutral entities: users, groups, members, and the message chain.

IDs are strings everywhere (Telegram's integers are converted), so session
keys and journal rows never mix ``1`` and ``"1"``. Every model keeps the
fields a platform sent that we do not model in ``raw`` instead of dropping them.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel


def _to_id(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("an id cannot be a boolean")
    return str(value) if isinstance(value, int) else value


ID = Annotated[str, BeforeValidator(_to_id)]


class Model(BaseModel):
    """Base of every wire model: fields a platform sent that we do not model are
    kept (pydantic "extra" fields, validated in Rust) and survive a round trip."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    @property
    def raw(self) -> dict[str, Any]:
        """The platform fields we do not model."""
        return self.__pydantic_extra__ or {}


class ChatType(enum.StrEnum):
    PRIVATE = "private"
    GROUP = "group"


class MemberRole(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


class User(Model):
    id: ID
    nickname: str = ""
    username: str | None = None
    avatar_url: str | None = None
    is_bot: bool = False
    remark: str | None = None


class Group(Model):
    id: ID
    name: str = ""
    description: str | None = None
    member_count: int | None = None
    avatar_url: str | None = None
    owner_id: ID | None = None


class GroupMember(Model):
    user: User
    group_id: ID
    role: MemberRole = MemberRole.MEMBER
    display_name: str | None = None
    joined_at: float | None = None
    title: str | None = None


# ---------------------------------------------------------------------- message chain


class Plain(Model):
    type: Literal["Plain"] = "Plain"
    text: str


class At(Model):
    type: Literal["At"] = "At"
    target: ID
    display: str | None = None


class AtAll(Model):
    type: Literal["AtAll"] = "AtAll"


class Image(Model):
    type: Literal["Image"] = "Image"
    url: str | None = None
    file_id: str | None = None
    data: bytes | None = None
    mime: str | None = None
    width: int | None = None
    height: int | None = None


class Voice(Model):
    type: Literal["Voice"] = "Voice"
    url: str | None = None
    file_id: str | None = None
    data: bytes | None = None
    duration: float | None = None
    mime: str | None = None


class File(Model):
    type: Literal["File"] = "File"
    name: str = ""
    url: str | None = None
    file_id: str | None = None
    data: bytes | None = None
    size: int | None = None
    mime: str | None = None


class Quote(Model):
    type: Literal["Quote"] = "Quote"
    message_id: ID
    sender_id: ID | None = None
    origin: list[Component] = Field(default_factory=list)


class Face(Model):
    type: Literal["Face"] = "Face"
    face_id: ID
    name: str | None = None


class Forward(Model):
    """A forwarded message (or, with ``nodes``, a merged forward)."""

    type: Literal["Forward"] = "Forward"
    from_chat_id: ID | None = None
    from_message_id: ID | None = None
    from_user: User | None = None
    nodes: list[list[Component]] = Field(default_factory=list)


class Source(Model):
    type: Literal["Source"] = "Source"
    message_id: ID
    timestamp: float | None = None


class PlatformComponent(Model):
    """Content with no neutral equivalent; the adapter that made it can render it."""

    type: Literal["Platform"] = "Platform"
    platform: str
    component_type: str
    data: dict[str, Any] = Field(default_factory=dict)


Component = Annotated[
    Plain | At | AtAll | Image | Voice | File | Quote | Face | Forward | Source | PlatformComponent,
    Field(discriminator="type"),
]


class MessageChain(RootModel[list[Component]]):
    """An ordered list of components; ``text`` joins the plain parts."""

    root: list[Component] = Field(default_factory=list)

    @classmethod
    def of(cls, *parts: Component | str) -> MessageChain:
        """A chain from components and strings (strings become ``Plain``)."""
        items: list[Any] = [{"type": "Plain", "text": p} if isinstance(p, str) else p for p in parts]
        return cls(items)

    @property
    def text(self) -> str:
        return "".join([c.text for c in self.root if c.type == "Plain"])

    def components(self, kind: type[Model]) -> list[Any]:
        return [c for c in self.root if isinstance(c, kind)]

    def __iter__(self) -> Any:
        return iter(self.root)

    def __len__(self) -> int:
        return len(self.root)


Quote.model_rebuild()
Forward.model_rebuild()
