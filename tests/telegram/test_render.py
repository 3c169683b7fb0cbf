"""Message chain -> Bot API calls: entities, captions, quotes, forwards, and
the split of texts over Telegram's 4,096 UTF-16 units."""

from __future__ import annotations

import pytest
import telegram as tg

from callboard.adapters.telegram.render import (
    ForwardMessage,
    Media,
    RenderError,
    Text,
    render,
    split_text,
    utf16_len,
)
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
    User,
    Voice,
)


def test_text_with_mentions_and_links_uses_entities() -> None:
    chain = MessageChain.of(
        "😀 hi ",
        At(target="1003", display="Cy"),
        " and ",
        At(target="@bob"),
        ", see ",
        Plain(text="docs", raw={"url": "https://d.example"}),
        " ",
        Plain(text="https://x.io", raw={"url": "https://x.io"}),
        AtAll(),
        Face(face_id="1", name="🙂"),
    )
    rendered = render(chain)
    (step,) = rendered.steps
    assert isinstance(step, Text)
    assert step.text == "😀 hi Cy and @bob, see docs https://x.io@all🙂"
    mention, link = step.entities
    assert (mention.type, mention.offset, mention.length, mention.user.id) == ("text_mention", 6, 2, 1003)
    assert (link.type, link.offset, link.length, link.url) == ("text_link", 23, 4, "https://d.example")
    assert rendered.reply_to is None


def test_media_take_the_text_after_them_as_caption() -> None:
    chain = MessageChain.of(
        Quote(message_id="55"),
        "first the text",
        Image(file_id="ph1"),
        "its caption",
        File(name="a.pdf", url="https://files.example/a.pdf"),
        Voice(file_id="vo1"),
        Voice(file_id="au1", raw={"kind": "audio"}),
        Source(message_id="1"),
    )
    rendered = render(chain)
    assert rendered.reply_to == 55
    text, photo, document, voice, audio = rendered.steps
    assert isinstance(text, Text) and text.text == "first the text"
    assert photo == Media("photo", {"photo": "ph1"}, Text("its caption", []))
    assert document == Media("document", {"document": "https://files.example/a.pdf", "filename": "a.pdf"})
    assert voice == Media("voice", {"voice": "vo1"})
    assert audio == Media("audio", {"audio": "au1"})


def test_uploaded_bytes_and_telegram_components() -> None:
    chain = MessageChain.of(
        Image(data=b"\x89PNG..."),
        PlatformComponent(platform="telegram", component_type="sticker", data={"file_id": "st1"}),
        "not a caption: stickers have none",
        PlatformComponent(
            platform="telegram", component_type="location", data={"latitude": 1.5, "longitude": 2.5}
        ),
    )
    upload, sticker, text, location = render(chain).steps
    assert isinstance(upload, Media) and isinstance(upload.params["photo"], tg.InputFile)
    assert sticker == Media("sticker", {"sticker": "st1"})
    assert isinstance(text, Text) and text.text.startswith("not a caption")
    assert location == Media("location", {"latitude": 1.5, "longitude": 2.5})


def test_a_long_caption_is_sent_as_its_own_message() -> None:
    caption = "c" * 1025
    photo, text = render(MessageChain.of(Image(file_id="p"), caption)).steps
    assert isinstance(photo, Media) and photo.caption is None
    assert isinstance(text, Text) and text.text == caption


def test_forwards() -> None:
    forward, text = render(
        MessageChain.of(Forward(from_chat_id="-100", from_message_id="7"), "and my comment")
    ).steps
    assert forward == ForwardMessage(-100, 7)
    assert isinstance(text, Text) and text.text == "and my comment"
    # no source message: its nodes' text is sent instead
    merged = Forward(from_user=User(id="1", nickname="Ann"), nodes=[[Plain(text="one")], [Plain(text="two")]])
    (step,) = render(MessageChain.of(merged)).steps
    assert isinstance(step, Text) and step.text == "Forwarded from Ann:\none\ntwo"


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        (MessageChain(), "nothing to send"),
        (MessageChain.of("   "), "nothing to send"),
        (MessageChain.of(Image()), "no file_id, url or data"),
        (MessageChain.of(PlatformComponent(platform="web", component_type="card")), "'web' component"),
        (MessageChain.of(PlatformComponent(platform="telegram", component_type="poll")), "'poll' component"),
    ],
)
def test_what_cannot_be_sent_is_a_clear_error(chain: MessageChain, reason: str) -> None:
    with pytest.raises(RenderError, match=reason):
        render(chain)


# ---------------------------------------------------------------------- splitting


def test_short_text_is_one_part() -> None:
    text = Text("x" * 4096)
    assert split_text(text) == [text]


def test_split_prefers_newlines_then_spaces() -> None:
    lines = [f"line {i:04d} " + "y" * 90 for i in range(100)]  # 100 x 100 characters
    parts = split_text(Text("\n".join(lines)))
    assert [utf16_len(p.text) <= 4096 for p in parts] == [True] * len(parts) and len(parts) == 3
    assert all(p.text.startswith("line ") for p in parts)  # every cut was at a newline
    assert "\n".join(p.text for p in parts) == "\n".join(lines)
    words = ("word " * 2000).strip()
    parts = split_text(Text(words))
    assert " ".join(p.text for p in parts) == words
    assert all(not p.text.startswith(" ") and not p.text.endswith(" ") for p in parts)


def test_split_counts_utf16_and_never_cuts_a_surrogate_pair() -> None:
    text = "😀" * 3000  # 6,000 UTF-16 units, no spaces
    parts = split_text(Text(text))
    assert [utf16_len(p.text) for p in parts] == [4096, 6000 - 4096]
    assert "".join(p.text for p in parts) == text


def test_split_clips_entities_to_their_parts() -> None:
    body = "a" * 4090 + " link text here " + "b" * 50  # cut at the space after "link"
    entity = tg.MessageEntity(type="text_link", offset=body.index("here"), length=4, url="https://l.example")
    first, second = split_text(Text(body, [entity]))
    assert first.text == "a" * 4090 + " link" and first.entities == []
    assert second.text.startswith("text here")
    (moved,) = second.entities
    assert (moved.offset, moved.length, moved.url) == (5, 4, "https://l.example")
    straddling = tg.MessageEntity(type="text_link", offset=4000, length=200, url="https://s.example")
    first, second = split_text(Text("z" * 5000, [straddling]))
    assert (first.entities[0].offset, first.entities[0].length) == (4000, 96)
    assert (second.entities[0].offset, second.entities[0].length) == (0, 104)
