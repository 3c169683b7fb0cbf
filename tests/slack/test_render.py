"""Message chain -> Slack calls: mrkdwn, blocks, uploads, permalinks, splitting."""

from __future__ import annotations

import pytest

from callboard.adapters.slack.render import (
    SECTION_LIMIT,
    TEXT_LIMIT,
    Permalink,
    Post,
    RenderError,
    Upload,
    render,
    split,
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


def test_text_mentions_links_and_escaping() -> None:
    chain = MessageChain.of(
        "a < b & c > d ",
        At(target="U0ANN"),
        " ",
        AtAll(),
        " ",
        AtAll(raw={"scope": "here"}),
        " ",
        Plain(text="docs", raw={"url": "https://x.example"}),
        " ",
        Face(face_id="1", name="tada"),
        Source(message_id="1"),
    )
    assert render(chain).steps == [
        Post("a &lt; b &amp; c &gt; d <@U0ANN> <!channel> <!here> <https://x.example|docs> :tada:")
    ]


def test_a_quote_is_a_blockquote_of_what_was_said() -> None:
    chain = MessageChain.of(Quote(message_id="1.2", origin=[Plain(text="line one\nline <two>")]), "my answer")
    assert render(chain).steps == [Post("&gt; line one\n&gt; line &lt;two&gt;\nmy answer")]


def test_images_by_url_or_slack_file_are_blocks_in_the_same_message() -> None:
    chain = MessageChain.of(
        "look:", Image(url="https://img.example/a.png"), "and", Image(file_id="F123", raw={"title": "cat"})
    )
    (post,) = render(chain).steps
    assert isinstance(post, Post) and post.text == "look:\nand"
    assert post.blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "look:"}},
        {"type": "image", "image_url": "https://img.example/a.png", "alt_text": "image"},
        {"type": "section", "text": {"type": "mrkdwn", "text": "and"}},
        {"type": "image", "slack_file": {"id": "F123"}, "alt_text": "cat"},
    ]


def test_bytes_are_uploaded_in_order() -> None:
    chain = MessageChain.of(
        "before",
        Image(data=b"png", mime="image/png"),
        File(name="r.pdf", data=b"pdf"),
        Voice(data=b"ogg", mime="audio/ogg"),
        "after",
    )
    assert render(chain).steps == [
        Post("before"),
        Upload(b"png", "image.png"),
        Upload(b"pdf", "r.pdf"),
        Upload(b"ogg", "voice.ogg"),
        Post("after"),
    ]


def test_files_by_url_are_links_and_by_slack_id_are_refused() -> None:
    assert render(MessageChain.of(File(name="spec", url="https://f.example/s.pdf"))).steps == [
        Post("<https://f.example/s.pdf|spec>")
    ]
    with pytest.raises(RenderError, match="needs data or url"):
        render(MessageChain.of(File(file_id="F1")))


def test_forwards() -> None:
    assert render(MessageChain.of(Forward(from_chat_id="C1", from_message_id="1.5"))).steps == [
        Permalink("C1", "1.5")
    ]
    merged = Forward(
        from_user=User(id="U1", nickname="Ann"), nodes=[[Plain(text="one")], [Plain(text="two")]]
    )
    assert render(MessageChain.of(merged)).steps == [Post("Forwarded from Ann:\none\ntwo")]


def test_slack_blocks_pass_through_and_other_platforms_are_refused() -> None:
    blocks = [{"type": "divider"}]
    (post,) = render(
        MessageChain.of(
            "hi", PlatformComponent(platform="slack", component_type="blocks", data={"blocks": blocks})
        )
    ).steps
    assert isinstance(post, Post) and post.blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}},
        {"type": "divider"},
    ]
    with pytest.raises(RenderError, match="telegram"):
        render(MessageChain.of(PlatformComponent(platform="telegram", component_type="sticker")))
    with pytest.raises(RenderError, match="nothing to send"):
        render(MessageChain.of(" "))


def test_long_text_is_split_at_a_newline_never_inside_an_escape() -> None:
    text = ("word " * 700 + "\n") * 3  # about 10,500 characters
    steps = render(MessageChain.of(text)).steps
    assert len(steps) == 3 and all(isinstance(s, Post) and len(s.text) <= TEXT_LIMIT for s in steps)
    assert "\n".join(s.text for s in steps if isinstance(s, Post)) == text  # cut at the newlines
    mention = "x" * (TEXT_LIMIT - 3) + "<@U0ANN> tail"
    parts = split(mention)
    assert parts[0] == "x" * (TEXT_LIMIT - 3) and parts[1].startswith("<@U0ANN>")
    escaped = "y" * (TEXT_LIMIT - 2) + "&amp;z"
    assert split(escaped)[1].startswith("&amp;")


def test_long_text_around_an_image_becomes_several_sections() -> None:
    chain = MessageChain.of("z" * (SECTION_LIMIT + 10), Image(url="https://img.example/b.png"))
    (post,) = render(chain).steps
    assert isinstance(post, Post) and post.blocks is not None
    sections = [b for b in post.blocks if b["type"] == "section"]
    assert len(sections) == 2 and all(len(b["text"]["text"]) <= SECTION_LIMIT for b in sections)
