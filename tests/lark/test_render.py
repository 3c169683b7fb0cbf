"""MessageChain -> Lark messages: text, post with mentions, media uploads,
cards, quotes as native replies, forwards flattened, and what cannot be sent."""

from __future__ import annotations

import pytest

from callboard.adapters.lark.render import Message, RenderError, Upload, edit_content, render, text_card
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


def only(chain: MessageChain, **kwargs: bool) -> Message:
    rendered = render(chain, **kwargs)
    (step,) = rendered.steps
    assert isinstance(step, Message)
    return step


def test_plain_text_is_a_text_message() -> None:
    message = only(MessageChain.of("hello ", "world", Source(message_id="om_1")))
    assert (message.msg_type, message.content) == ("text", {"text": "hello world"})


def test_mentions_make_a_post_with_lines() -> None:
    chain = MessageChain.of(At(target="ou_bob", display="Bob"), " look\nsecond line ", AtAll())
    message = only(chain)
    assert message.msg_type == "post"
    assert message.content == {
        "zh_cn": {
            "title": "",
            "content": [
                [{"tag": "at", "user_id": "ou_bob", "user_name": "Bob"}, {"tag": "text", "text": " look"}],
                [{"tag": "text", "text": "second line "}, {"tag": "at", "user_id": "all"}],
            ],
        }
    }


def test_media_are_uploads_between_texts_and_a_quote_is_a_reply() -> None:
    image = Image(data=b"png")
    voice = Voice(data=b"opus", duration=1.5)
    document = File(name="a.pdf", data=b"%PDF")
    rendered = render(MessageChain.of(Quote(message_id="om_q"), "before", image, voice, document, "after"))
    assert rendered.reply_to == "om_q"
    kinds = [(s.msg_type if isinstance(s, Message) else type(s.component).__name__) for s in rendered.steps]
    assert kinds == ["text", "Image", "Voice", "File", "text"]
    assert all(s.component is c for s, c in zip(rendered.steps[1:4], (image, voice, document), strict=True))  # type: ignore[union-attr]
    assert isinstance(rendered.steps[1], Upload)


def test_cards_faces_and_forwards() -> None:
    card = {"elements": [{"tag": "markdown", "content": "x"}]}
    rendered = render(
        MessageChain.of(
            Face(face_id="1", name="smile"),
            PlatformComponent(platform="lark", component_type="card", data=card),
            Forward(nodes=[[Plain(text="one")], [Plain(text="two")]]),
        )
    )
    first, second, third = rendered.steps
    assert isinstance(first, Message) and first.content == {"text": "[smile]"}
    assert isinstance(second, Message) and (second.msg_type, second.content) == ("interactive", card)
    assert isinstance(third, Message) and third.content == {"text": "one\ntwo\n"}


def test_streamed_text_is_a_shared_card() -> None:
    message = only(MessageChain.of("thinking ", At(target="ou_bob")), as_card=True)
    assert message.msg_type == "interactive"
    assert message.content == text_card("thinking <at id=ou_bob></at>")
    assert message.content["config"]["update_multi"] is True


def test_what_cannot_be_sent() -> None:
    with pytest.raises(RenderError, match="empty"):
        render(MessageChain.of(Source(message_id="om_1")))
    with pytest.raises(RenderError, match="telegram"):
        render(MessageChain.of(PlatformComponent(platform="telegram", component_type="poll")))
    with pytest.raises(RenderError, match="no media"):
        edit_content(MessageChain.of("x", Image(data=b"1")), card=False)
    assert edit_content(MessageChain.of("new"), card=True).msg_type == "interactive"
    assert edit_content(MessageChain.of(At(target="ou_a"), "x"), card=False).msg_type == "post"
