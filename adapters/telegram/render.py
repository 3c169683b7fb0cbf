"""Message chain -> the Bot API calls that send it, in order.

Text (with mentions and links as entities, never parse modes, so nothing
needs escaping) is sent with sendMessage, split into parts of at most 4,096
UTF-16 code units at a newline or space where possible. Media go one call
each (sendPhoto, sendDocument, sendVoice, sendAudio...); the text that
directly follows a media item becomes its caption when it fits in 1,024
units, otherwise it is sent after it. A ``Quote`` makes the first message a
reply. A ``Forward`` with a source chat and message is a forwardMessage;
without them its nodes' text is sent instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import telegram as tg
from telegram.constants import MessageEntityType, MessageLimit

from callboard.engine.entities import (
    At,
    AtAll,
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

TEXT_LIMIT: int = MessageLimit.MAX_TEXT_LENGTH
CAPTION_LIMIT: int = MessageLimit.CAPTION_LENGTH

#: media that may carry a caption
_CAPTIONED = frozenset({"photo", "document", "voice", "audio", "video", "animation"})
#: Telegram contents a chain may carry as a ``PlatformComponent`` and send again by file_id
_BY_FILE_ID = frozenset({"sticker", "video", "animation", "video_note"})


class RenderError(ValueError):
    """The chain holds something this adapter cannot send."""


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(slots=True)
class Text:
    text: str
    entities: list[tg.MessageEntity] = field(default_factory=list)


@dataclass(slots=True)
class Media:
    """One send_<method> call; ``params`` names the media (photo=..., sticker=...)."""

    method: str
    params: dict[str, Any]
    caption: Text | None = None


@dataclass(slots=True)
class ForwardMessage:
    from_chat_id: int | str
    message_id: int


Step = Text | Media | ForwardMessage


@dataclass(slots=True)
class Rendered:
    steps: list[Step]
    reply_to: int | None


def chat_ref(chat_id: str) -> int | str:
    """Telegram takes numeric chat ids as integers and ``@channel`` names as text."""
    try:
        return int(chat_id)
    except ValueError:
        return chat_id


class _TextRun:
    """Text being assembled, with entity offsets in UTF-16 code units."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.entities: list[tg.MessageEntity] = []
        self.units = 0

    def add(self, text: str, **entity: Any) -> None:
        if not text:
            return
        length = utf16_len(text)
        if entity:
            self.entities.append(tg.MessageEntity(offset=self.units, length=length, **entity))
        self.parts.append(text)
        self.units += length

    def take(self) -> Text | None:
        text = "".join(self.parts)
        entities = self.entities
        self.parts, self.entities, self.units = [], [], 0
        return Text(text, entities) if text.strip() else None


def render(chain: MessageChain) -> Rendered:
    steps: list[Step] = []
    reply_to: int | None = None
    run = _TextRun()

    def flush() -> None:
        text = run.take()
        if text is None:
            return
        last = steps[-1] if steps else None
        if (
            isinstance(last, Media)
            and last.caption is None
            and last.method in _CAPTIONED
            and utf16_len(text.text) <= CAPTION_LIMIT
        ):
            last.caption = text
        else:
            steps.extend(split_text(text, TEXT_LIMIT))

    for part in chain:
        if isinstance(part, Plain):
            url = part.raw.get("url")
            if isinstance(url, str) and url and url != part.text:
                run.add(part.text, type=MessageEntityType.TEXT_LINK, url=url)
            else:
                run.add(part.text)
        elif isinstance(part, At):
            if part.target.startswith("@"):
                run.add(part.target)  # Telegram links @username mentions itself
            else:
                name = part.display or part.target
                user = tg.User(id=int(part.target), first_name=name.lstrip("@") or part.target, is_bot=False)
                run.add(name, type=MessageEntityType.TEXT_MENTION, user=user)
        elif isinstance(part, AtAll):
            run.add("@all")  # Telegram has no mention of everyone: the text is all it can be
        elif isinstance(part, Face):
            run.add(part.name or part.face_id)
        elif isinstance(part, Quote):
            if reply_to is None:
                reply_to = int(part.message_id)
        elif isinstance(part, Source):
            continue  # metadata about an incoming message, nothing to send
        elif isinstance(part, Forward):
            if part.from_chat_id is not None and part.from_message_id is not None:
                flush()
                steps.append(ForwardMessage(chat_ref(part.from_chat_id), int(part.from_message_id)))
            else:
                _forward_fallback(part, run)
        else:
            flush()
            steps.append(_media(part))
    flush()
    if not steps:
        raise RenderError("nothing to send: the message chain has no text or media")
    return Rendered(steps, reply_to)


def _forward_fallback(part: Forward, run: _TextRun) -> None:
    """A forward Telegram cannot make (no source message): send what it says."""
    lines = [MessageChain(node).text for node in part.nodes]
    lines = [line for line in lines if line]
    if not lines:
        return
    header = f"Forwarded from {part.from_user.nickname}:\n" if part.from_user is not None else ""
    if run.parts:
        run.add("\n")
    run.add(header + "\n".join(lines))


def _source(part: Image | File | Voice) -> Any:
    if part.file_id:
        return part.file_id
    if part.url:
        return part.url
    if part.data is not None:
        name = getattr(part, "name", "") or part.raw.get("file_name") or part.type.lower()
        return tg.InputFile(part.data, filename=name)
    raise RenderError(f"{part.type} has no file_id, url or data to send")


def _media(part: Any) -> Media:
    if isinstance(part, Image):
        return Media("photo", {"photo": _source(part)})
    if isinstance(part, File):
        params: dict[str, Any] = {"document": _source(part)}
        if part.name and not part.file_id:
            params["filename"] = part.name
        return Media("document", params)
    if isinstance(part, Voice):
        kind = "audio" if part.raw.get("kind") == "audio" else "voice"
        return Media(kind, {kind: _source(part)})
    if isinstance(part, PlatformComponent) and part.platform == "telegram":
        kind = part.component_type
        if kind in _BY_FILE_ID and isinstance(part.data.get("file_id"), str):
            return Media(kind, {kind: part.data["file_id"]})
        if kind == "location" and {"latitude", "longitude"} <= part.data.keys():
            return Media("location", {"latitude": part.data["latitude"], "longitude": part.data["longitude"]})
        raise RenderError(f"telegram cannot send a {kind!r} component this way")
    if isinstance(part, PlatformComponent):
        raise RenderError(f"telegram cannot render a {part.platform!r} component ({part.component_type!r})")
    raise RenderError(f"telegram cannot send a {part.type!r} component")


# ---------------------------------------------------------------------- splitting


def split_text(text: Text, limit: int = TEXT_LIMIT) -> list[Text]:
    """Parts of at most ``limit`` UTF-16 units, cut after a newline, else a
    space, in the second half of the part, else exactly at the limit (never
    inside a surrogate pair). Entities are clipped to the part they touch."""
    if utf16_len(text.text) <= limit:
        return [text]
    parts: list[Text] = []
    source = text.text
    start = 0  # index into source
    start_units = 0
    while start < len(source):
        end, resume = _cut(source, start, limit)
        chunk = source[start:end]
        chunk_units = utf16_len(chunk)
        entities = _clip(text.entities, start_units, start_units + chunk_units)
        if chunk.strip():
            parts.append(Text(chunk, entities))
        start_units += utf16_len(source[start:resume])
        start = resume
    return parts


def _cut(source: str, start: int, limit: int) -> tuple[int, int]:
    """(end of this part, start of the next) for the part beginning at ``start``."""
    units = 0
    end = start
    for index in range(start, len(source)):
        width = 2 if ord(source[index]) > 0xFFFF else 1
        if units + width > limit:
            break
        units += width
        end = index + 1
    else:
        return len(source), len(source)
    half = start + (end - start) // 2
    newline = source.rfind("\n", half, end)
    if newline != -1:
        return newline, newline + 1
    space = source.rfind(" ", half, end)
    if space != -1:
        return space, space + 1
    return end, end


def _clip(entities: list[tg.MessageEntity], start: int, end: int) -> list[tg.MessageEntity]:
    out = []
    for entity in entities:
        lo = max(entity.offset, start)
        hi = min(entity.offset + entity.length, end)
        if hi > lo:
            out.append(
                tg.MessageEntity(
                    type=entity.type, offset=lo - start, length=hi - lo, url=entity.url, user=entity.user
                )
            )
    return out
