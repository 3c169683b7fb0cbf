"""MessageChain -> Lark messages.

A chain becomes one or more sends in order. Text, mentions and faces gather
into one message: ``text`` when it is plain text, ``post`` when it mentions
someone (``at`` elements; ``AtAll`` is ``user_id: all``). Each image, file and
voice is its own message (``image``, ``file``, ``audio``) after an upload,
unless it already names a Lark key. A ``lark`` card component is sent as an
``interactive`` message; a ``Quote`` makes the sends native replies to the
quoted message; a ``Forward`` is flattened into its nodes. With
``as_card`` (stream_replies) a text-only chain is sent as a card instead, so
it can be updated in place as the text grows.
"""

from __future__ import annotations

from typing import Any

from callboard.engine.entities import (
    At,
    AtAll,
    Component,
    Face,
    File,
    Forward,
    Image,
    MessageChain,
    Plain,
    PlatformComponent,
    Quote,
    Source,
    Voice,
)
from callboard.engine.platform import SendError

ADAPTER = "lark"


class RenderError(SendError):
    """The chain has something Lark cannot show; sending it again cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class Message:
    """One Lark message ready to send."""

    __slots__ = ("content", "msg_type")

    def __init__(self, msg_type: str, content: dict[str, Any]) -> None:
        self.msg_type = msg_type
        self.content = content

    def __repr__(self) -> str:
        return f"Message({self.msg_type!r}, {self.content!r})"


class Upload:
    """Media to upload first (``image`` -> image_key, ``file``/``audio`` -> file_key)."""

    __slots__ = ("component",)

    def __init__(self, component: Image | File | Voice) -> None:
        self.component = component


Step = Message | Upload


class Rendered:
    __slots__ = ("reply_to", "steps")

    def __init__(self, steps: list[Step], reply_to: str | None) -> None:
        self.steps = steps
        self.reply_to = reply_to


def text_card(text: str) -> dict[str, Any]:
    """A card showing ``text`` as markdown; ``update_multi`` lets it be patched for everyone."""
    return {
        "config": {"wide_screen_mode": True, "update_multi": True},
        "elements": [{"tag": "markdown", "content": text}],
    }


class _Inline:
    """Text, mentions and faces gathered into one text/post message."""

    def __init__(self) -> None:
        self.lines: list[list[dict[str, Any]]] = [[]]
        self.mentions = False

    def text(self, text: str) -> None:
        first, *rest = text.split("\n")
        if first:
            self.lines[-1].append({"tag": "text", "text": first})
        for line in rest:
            self.lines.append([{"tag": "text", "text": line}] if line else [])

    def at(self, user_id: str, name: str) -> None:
        self.mentions = True
        element: dict[str, Any] = {"tag": "at", "user_id": user_id}
        if name:
            element["user_name"] = name
        self.lines[-1].append(element)

    @property
    def empty(self) -> bool:
        return not any(self.lines)

    def plain(self) -> str:
        return "\n".join("".join(e.get("text", "") for e in line) for line in self.lines)

    def markdown(self) -> str:
        def piece(element: dict[str, Any]) -> str:
            if element["tag"] == "at":
                return f"<at id={element['user_id']}></at>"
            return str(element.get("text", ""))

        return "\n".join("".join(piece(e) for e in line) for line in self.lines)

    def message(self, as_card: bool) -> Message:
        if as_card:
            return Message("interactive", text_card(self.markdown()))
        if not self.mentions:
            return Message("text", {"text": self.plain()})
        return Message("post", {"zh_cn": {"title": "", "content": self.lines}})


def render(chain: MessageChain, *, as_card: bool = False) -> Rendered:
    steps: list[Step] = []
    reply_to: str | None = None
    inline = _Inline()
    media = False

    def flush() -> None:
        nonlocal inline
        if not inline.empty:
            steps.append(inline.message(as_card and not media))
        inline = _Inline()

    def add(component: Component) -> None:
        nonlocal reply_to, media
        if isinstance(component, Plain):
            inline.text(component.text)
        elif isinstance(component, At):
            inline.at(component.target, component.display or "")
        elif isinstance(component, AtAll):
            inline.at("all", "")
        elif isinstance(component, Face):
            inline.text(f"[{component.name or component.face_id}]")
        elif isinstance(component, Image | File | Voice):
            flush()
            media = True
            steps.append(Upload(component))
        elif isinstance(component, Quote):
            reply_to = reply_to or component.message_id
        elif isinstance(component, Forward):
            for node in component.nodes:
                for part in node:
                    add(part)
                inline.text("\n")
        elif isinstance(component, Source):
            pass  # where a received message came from: nothing to show
        elif isinstance(component, PlatformComponent):
            if component.platform != ADAPTER:
                raise RenderError(
                    f"a {component.platform} {component.component_type!r} cannot be sent to Lark"
                )
            flush()
            msg_type = "interactive" if component.component_type == "card" else component.component_type
            steps.append(Message(msg_type, dict(component.data)))
        else:  # pragma: no cover - every component kind is handled above
            raise RenderError(f"cannot render {type(component).__name__}")

    for component in chain:
        add(component)
    flush()
    if not steps:
        raise RenderError("nothing to send: the message is empty")
    return Rendered(steps, reply_to)


def edit_content(chain: MessageChain, *, card: bool) -> Message:
    """What an edit sends: a card (patched) or one text/post (updated)."""
    rendered = render(chain, as_card=card)
    if len(rendered.steps) != 1 or not isinstance(rendered.steps[0], Message):
        raise RenderError("a Lark edit takes one text, post or card, no media")
    message = rendered.steps[0]
    if not card and message.msg_type not in ("text", "post"):
        raise RenderError("only text and post messages can be edited; cards are updated with update_card")
    return message
