"""Message chain -> the Web API calls that send it, in order.

Text becomes mrkdwn (``&``, ``<``, ``>`` escaped; mentions ``<@U1>``,
``<!channel>``/``<!here>``; links ``<url|label>``; quotes as ``>`` lines,
emoji as ``:name:``). A message of text alone is one ``chat.postMessage``
``text``, split at ``TEXT_LIMIT`` characters at a newline or space where
possible. Images by URL or by Slack file id become ``image`` blocks in the
same message, with the text around them as ``section`` blocks (each at most
3,000 characters, at most 50 blocks a message) and the text as the
notification fallback. Content given as bytes (images, files, voice) is
uploaded with files_upload_v2 into the same channel and thread. A
``Forward`` of a Slack message posts its permalink, which Slack unfurls; a
``PlatformComponent`` of Slack ``blocks`` is sent as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

#: a message's text; Slack accepts up to 40,000 but shows longer than this folded, and
#: streamed edits (chat.update) carry the whole text each time
TEXT_LIMIT = 4000
SECTION_LIMIT = 3000
MAX_BLOCKS = 50


class RenderError(ValueError):
    """The chain holds something this adapter cannot send."""


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(slots=True)
class Post:
    """One chat.postMessage: ``text`` alone, or ``blocks`` with ``text`` as the fallback."""

    text: str
    blocks: list[dict[str, Any]] | None = None


@dataclass(slots=True)
class Upload:
    """One file through files_upload_v2."""

    data: bytes
    filename: str
    title: str | None = None


@dataclass(slots=True)
class Permalink:
    """Post the link of a Slack message (a forward)."""

    channel: str
    ts: str


Step = Post | Upload | Permalink


@dataclass(slots=True)
class Rendered:
    steps: list[Step]


@dataclass(slots=True)
class _Message:
    """The message being assembled: text runs and blocks."""

    text: list[str] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)

    def add(self, mrkdwn: str) -> None:
        self.text.append(mrkdwn)

    def flush_text(self) -> None:
        text = "".join(self.text)
        self.text = []
        if not text.strip():
            return
        self.fallback.append(text)
        for part in split(text, SECTION_LIMIT):
            self.blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": part}})

    def block(self, block: dict[str, Any]) -> None:
        self.flush_text()
        self.blocks.append(block)

    def take(self) -> list[Post]:
        if not self.blocks:
            text = "".join(self.text)
            self.text = []
            return [Post(part) for part in split(text, TEXT_LIMIT)] if text.strip() else []
        self.flush_text()
        blocks, self.blocks = self.blocks, []
        fallback = "\n".join(self.fallback)[:TEXT_LIMIT] or "(image)"
        self.fallback = []
        posts = []
        for start in range(0, len(blocks), MAX_BLOCKS):
            posts.append(Post(fallback, blocks[start : start + MAX_BLOCKS]))
        return posts


def render(chain: MessageChain) -> Rendered:
    steps: list[Step] = []
    message = _Message()
    for part in chain:
        if isinstance(part, Plain):
            url = part.raw.get("url")
            if isinstance(url, str) and url:
                message.add(f"<{url}|{escape(part.text)}>" if part.text and part.text != url else f"<{url}>")
            else:
                message.add(escape(part.text))
        elif isinstance(part, At):
            message.add(f"<@{part.target.lstrip('@')}>")
        elif isinstance(part, AtAll):
            scope = part.raw.get("scope")
            message.add(f"<!{scope if scope in ('here', 'everyone') else 'channel'}>")
        elif isinstance(part, Face):
            message.add(f":{(part.name or part.face_id).strip(':')}:")
        elif isinstance(part, Quote):
            origin = MessageChain(list(part.origin)).text if part.origin else ""
            if origin:
                lead = "\n" if message.text and not message.text[-1].endswith("\n") else ""
                message.add(lead + "\n".join(f"&gt; {escape(line)}" for line in origin.splitlines()) + "\n")
        elif isinstance(part, Source):
            continue
        elif isinstance(part, Forward):
            if part.from_chat_id and part.from_message_id:
                steps.extend(message.take())
                steps.append(Permalink(part.from_chat_id, part.from_message_id))
            else:
                lines = [MessageChain(node).text for node in part.nodes]
                text = "\n".join(line for line in lines if line)
                if text:
                    header = (
                        f"Forwarded from {part.from_user.nickname}:\n" if part.from_user is not None else ""
                    )
                    message.add(escape(header + text))
        elif isinstance(part, Image) and part.data is None:
            if part.url:
                message.block({"type": "image", "image_url": part.url, "alt_text": _alt(part)})
            elif part.file_id:
                message.block({"type": "image", "slack_file": {"id": part.file_id}, "alt_text": _alt(part)})
            else:
                raise RenderError("Image has no url, file_id or data to send")
        elif isinstance(part, Image | File | Voice):
            if part.data is not None:
                steps.extend(message.take())
                steps.append(Upload(part.data, _filename(part), part.raw.get("title")))
            elif part.url:
                name = part.name if isinstance(part, File) and part.name else part.url
                message.add(f"<{part.url}|{escape(name)}>" if name != part.url else f"<{part.url}>")
            else:
                raise RenderError(
                    f"{part.type} needs data or url to send on Slack (a Slack file id cannot be re-shared)"
                )
        elif (
            isinstance(part, PlatformComponent)
            and part.platform == "slack"
            and part.component_type == "blocks"
        ):
            blocks = part.data.get("blocks")
            if not isinstance(blocks, list):
                raise RenderError("a slack 'blocks' component needs data {'blocks': [...]}")
            message.flush_text()
            message.blocks.extend(blocks)
        elif isinstance(part, PlatformComponent):
            raise RenderError(f"slack cannot render a {part.platform!r} component ({part.component_type!r})")
        else:
            raise RenderError(f"slack cannot send a {part.type!r} component")
    steps.extend(message.take())
    if not steps:
        raise RenderError("nothing to send: the message chain has no text or media")
    return Rendered(steps)


def _alt(part: Image) -> str:
    alt = part.raw.get("alt_text") or part.raw.get("title") or part.raw.get("name") or "image"
    return str(alt)[:2000]


def _filename(part: Image | File | Voice) -> str:
    name = getattr(part, "name", "") or part.raw.get("name") or part.raw.get("file_name")
    if name:
        return str(name)
    mime = part.mime or ""
    suffix = mime.split("/", 1)[1].split(";")[0] if "/" in mime else "bin"
    return f"{part.type.lower()}.{suffix}"


def split(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Parts of at most ``limit`` characters, cut after a newline, else a
    space, in the second half of the part, else exactly at the limit; never
    inside a ``<...>`` escape or an ``&...;`` entity."""
    parts: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = window.rfind("\n", limit // 2)
        if cut == -1:
            cut = window.rfind(" ", limit // 2)
        if cut == -1:
            cut = limit
        opened = window.rfind("<", 0, cut)
        if opened > window.rfind(">", 0, cut) and opened > 0:
            cut = opened  # do not cut a mention or link in two
        amp = window.rfind("&", 0, cut)
        if amp > window.rfind(";", 0, cut) and amp > 0 and cut - amp < 6:
            cut = amp
        head, text = text[:cut], text[cut:]
        if text[:1] in ("\n", " "):
            text = text[1:]
        if head.strip():
            parts.append(head)
    if text.strip():
        parts.append(text)
    return parts
