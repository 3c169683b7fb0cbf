"""Slack payloads -> engine events, one conversion at a time (payloads built by
the fake Slack, as it sends them)."""

from __future__ import annotations

from typing import Any

import pytest

from callboard.adapters.slack.convert import Converter, Identity, text_components
from callboard.engine.entities import At, AtAll, File, Image, Plain, Voice
from callboard.engine.events import (
    BotInvitedToGroup,
    BotRemovedFromGroup,
    Event,
    FeedbackReceived,
    GroupInfoUpdated,
    MemberJoined,
    MemberLeft,
    MessageDeleted,
    MessageEdited,
    MessageReaction,
    MessageReceived,
    PlatformSpecific,
    decode_event,
    encode_event,
)
from callboard.testing.fake_slack import BOT_ID, BOT_USER, TEAM, FakeSlack
from tests.slack.conftest import ANN, BOB, GENERAL, SECRET_ROOM, workspace

ME = Identity(user_id=BOT_USER, bot_id=BOT_ID, team_id=TEAM, name="callboard")


@pytest.fixture
def slack() -> FakeSlack:
    return workspace(FakeSlack())


def converter(*, channel_messages: str = "mention", thread_sessions: bool = True) -> Converter:
    return Converter("sl", ME, channel_messages=channel_messages, thread_sessions=thread_sessions)


def wrap(event: dict[str, Any], event_id: str = "Ev1") -> dict[str, Any]:
    return {
        "type": "event_callback",
        "team_id": TEAM,
        "event_id": event_id,
        "event_time": 1700000000,
        "event": event,
    }


def one(events: list[Event]) -> Any:
    assert len(events) == 1, events
    round_trip = decode_event(encode_event(events[0]))  # every event survives the journal
    assert round_trip == events[0]
    return events[0]


# ---------------------------------------------------------------------- text


def test_mentions_links_and_escapes() -> None:
    parts = text_components(
        "hi <@U0ANN|ann> &amp; <!here> see <https://x.example/a?b=1&amp;c=2|the docs> "
        "in <#C0GENERAL|general> &lt;b&gt; <!subteam^S1|@devs> "
        "<!date^1392734382^{date}|Feb 18> <mailto:a@b.example>"
    )
    assert parts == [
        Plain(text="hi "),
        At(target="U0ANN", display="ann"),
        Plain(text=" & "),
        AtAll(raw={"scope": "here"}),
        Plain(text=" see "),
        Plain(text="the docs", raw={"url": "https://x.example/a?b=1&c=2"}),
        Plain(text=" in "),
        Plain(text="#general", raw={"channel": "C0GENERAL"}),
        Plain(text=" <b> "),
        Plain(text="@devs", raw={"subteam": "S1"}),
        Plain(text=" Feb 18 "),
        Plain(text="mailto:a@b.example", raw={"url": "mailto:a@b.example"}),
    ]


def test_a_leading_mention_of_the_bot_reads_as_the_command_after_it() -> None:
    parts = text_components(f"<@{BOT_USER}>   /help me", BOT_USER)
    assert parts == [At(target=BOT_USER), Plain(text="/help me")]
    assert text_components("<!channel>", BOT_USER) == [AtAll(raw={"scope": "channel"})]


# ---------------------------------------------------------------------- messages


def test_a_dm_is_a_private_message(slack: FakeSlack) -> None:
    dm = slack.im(ANN)
    event = one(converter().event_callback(wrap(slack.message(dm, ANN, "hello"))))
    assert isinstance(event, MessageReceived)
    assert (event.chat_type, event.chat_id, event.thread_id, event.group) == ("private", dm, None, None)
    assert event.text == "hello" and event.sender.id == ANN
    assert event.dedup_key == f"msg:{TEAM}:{dm}:{event.message_id}"
    assert event.raw["channel_type"] == "im" and event.raw["event_id"] == "Ev1"
    assert event.timestamp == float(event.message_id)
    assert event.session_key().name == f"private:{dm}"


def test_channel_messages_need_a_mention_unless_all(slack: FakeSlack) -> None:
    plain = wrap(slack.message(GENERAL, ANN, "just chatting"))
    mention = wrap(slack.message(GENERAL, ANN, f"<@{BOT_USER}> help"))
    private = wrap(slack.message(SECRET_ROOM, ANN, "quiet"))
    strict = converter()
    assert strict.event_callback(plain) == [] and strict.event_callback(private) == []
    assert strict.filtered == 2
    event = one(strict.event_callback(mention))
    assert event.chat_type == "group" and event.group.id == GENERAL and event.text == "help"
    assert event.raw["channel_type"] == "channel"
    everything = converter(channel_messages="all")
    assert one(everything.event_callback(plain)).text == "just chatting"
    assert one(everything.event_callback(private)).raw["channel_type"] == "group"


def test_group_dms_are_always_delivered(slack: FakeSlack) -> None:
    slack.add_channel("G0MPIM", "mpdm-ann--bob", kind="mpim", members=[ANN, BOB])
    event = one(converter().event_callback(wrap(slack.message("G0MPIM", BOB, "hey all"))))
    assert event.chat_type == "group" and event.raw["channel_type"] == "mpim"


def test_app_mention_and_message_share_one_dedup_key(slack: FakeSlack) -> None:
    message = slack.message(GENERAL, ANN, f"<@{BOT_USER}> ping")
    c = converter()
    from_message = one(c.event_callback(wrap(message, "Ev1")))
    from_mention = one(c.event_callback(wrap(slack.app_mention(message), "Ev2")))
    assert from_message.dedup_key == from_mention.dedup_key
    assert from_mention.text == from_message.text == "ping"


def test_threads_are_sessions_of_their_own_when_asked(slack: FakeSlack) -> None:
    parent = slack.message(GENERAL, ANN, f"<@{BOT_USER}> start")
    reply = wrap(slack.message(GENERAL, BOB, f"<@{BOT_USER}> more", thread_ts=parent["ts"]))
    threaded = one(converter().event_callback(reply))
    assert threaded.thread_id == parent["ts"]
    assert threaded.session_key().name == f"group:{GENERAL}:{parent['ts']}"
    flat = one(converter(thread_sessions=False).event_callback(reply))
    assert flat.thread_id is None and flat.raw["thread_ts"] == parent["ts"]
    assert flat.session_key().name == f"group:{GENERAL}"


def test_own_and_other_bots_messages_never_come_in(slack: FakeSlack) -> None:
    dm = slack.im(ANN)
    c = converter(channel_messages="all")
    own = {**slack.message(dm, BOT_USER, "my reply"), "bot_id": BOT_ID}
    other = {**slack.message(dm, "U0OTHER", "beep"), "bot_id": "B0OTHER"}
    legacy = slack.message(dm, "", "integration", subtype="bot_message")
    for event in (own, other, legacy):
        assert c.event_callback(wrap(event)) == []
    assert c.event_callback(wrap(slack.app_mention(other))) == []


def test_shared_files_become_image_file_and_voice(slack: FakeSlack) -> None:
    dm = slack.im(ANN)
    photo = slack.add_file(b"png", "cat.png", "image/png", user=ANN)
    doc = slack.add_file(b"pdf", "report.pdf", "application/pdf", user=ANN)
    clip = {**slack.add_file(b"ogg", "note.ogg", "audio/ogg", user=ANN), "duration_ms": 2500}
    event = one(converter().event_callback(wrap(slack.message(dm, ANN, "look", files=[photo, doc, clip]))))
    image, file, voice = (
        event.message_chain.components(Image)[0],
        event.message_chain.components(File)[0],
        (event.message_chain.components(Voice)[0]),
    )
    assert event.text == "look" and event.raw["subtype"] == "file_share"
    assert (image.file_id, image.mime, image.width, image.height) == (photo["id"], "image/png", 640, 480)
    assert (file.file_id, file.name, file.size, file.mime) == (doc["id"], "report.pdf", 3, "application/pdf")
    assert voice.file_id == clip["id"] and voice.duration == 2.5


def test_other_subtypes_are_platform_specific_never_dropped(slack: FakeSlack) -> None:
    event = one(
        converter().event_callback(
            wrap(slack.message(GENERAL, ANN, "set the topic", subtype="channel_topic"))
        )
    )
    assert isinstance(event, PlatformSpecific) and event.action == "message.channel_topic"
    assert event.chat_id == GENERAL
    unknown = one(converter().event_callback(wrap({"type": "dnd_updated_user", "user": ANN})))
    assert isinstance(unknown, PlatformSpecific) and unknown.action == "dnd_updated_user"
    assert unknown.qualified_type == "platform.slack.dnd_updated_user"
    assert unknown.dedup_key == "ev:Ev1"


# ---------------------------------------------------------------------- edits and deletions


def test_edits_become_message_edited(slack: FakeSlack) -> None:
    dm = slack.im(ANN)
    original = slack.message(dm, ANN, "helo")
    event = one(converter().event_callback(wrap(slack.edit(dm, original["ts"], "hello <@U0BOB>"))))
    assert isinstance(event, MessageEdited)
    assert event.message_id == original["ts"] and event.editor.id == ANN
    assert list(event.new_content) == [Plain(text="hello "), At(target=BOB)]
    assert event.dedup_key == "ev:Ev1"


def test_an_edit_that_changes_no_text_is_platform_specific(slack: FakeSlack) -> None:
    dm = slack.im(ANN)
    original = slack.message(dm, ANN, "see https://x.example")
    unfurl = slack.edit(dm, original["ts"], "see https://x.example")
    event = one(converter().event_callback(wrap(unfurl)))
    assert isinstance(event, PlatformSpecific) and event.action == "message_changed"


def test_edits_of_the_bots_own_messages_do_not_loop(slack: FakeSlack) -> None:
    dm = slack.im(ANN)
    own = slack.message(dm, BOT_USER, "streaming...", bot_id=BOT_ID)
    assert converter().event_callback(wrap(slack.edit(dm, own["ts"], "streaming... done"))) == []
    assert converter().event_callback(wrap(slack.delete(dm, own["ts"]))) == []


def test_deletions_become_message_deleted(slack: FakeSlack) -> None:
    dm = slack.im(ANN)
    original = slack.message(dm, ANN, "oops")
    event = one(converter().event_callback(wrap(slack.delete(dm, original["ts"]))))
    assert isinstance(event, MessageDeleted) and event.message_id == original["ts"] and event.chat_id == dm


def test_channel_edits_and_deletions_follow_channel_messages(slack: FakeSlack) -> None:
    chatter = slack.message(GENERAL, ANN, "unrelated")
    assert converter().event_callback(wrap(slack.edit(GENERAL, chatter["ts"], "still unrelated"))) == []
    mention = slack.message(GENERAL, ANN, f"<@{BOT_USER}> typo")
    assert isinstance(
        one(converter().event_callback(wrap(slack.delete(GENERAL, mention["ts"])))), MessageDeleted
    )


# ---------------------------------------------------------------------- reactions, members, channels


def test_reactions(slack: FakeSlack) -> None:
    message = slack.message(GENERAL, ANN, "vote")
    added = one(converter().event_callback(wrap(slack.reaction(GENERAL, message["ts"], BOB, "thumbsup"))))
    assert isinstance(added, MessageReaction)
    assert (added.reaction, added.is_add, added.user.id, added.message_id) == (
        "thumbsup",
        True,
        BOB,
        message["ts"],
    )
    removed = one(
        converter().event_callback(wrap(slack.reaction(GENERAL, message["ts"], BOB, "thumbsup", added=False)))
    )
    assert removed.is_add is False
    assert converter().event_callback(wrap(slack.reaction(GENERAL, message["ts"], BOT_USER, "eyes"))) == []
    on_file = {"type": "reaction_added", "user": BOB, "reaction": "x", "item": {"type": "file", "file": "F1"}}
    assert isinstance(one(converter().event_callback(wrap(on_file))), PlatformSpecific)


def test_members_joining_and_leaving(slack: FakeSlack) -> None:
    c = converter()
    joined = one(c.event_callback(wrap(slack.member_joined(GENERAL, "U0CY", inviter=ANN))))
    assert isinstance(joined, MemberJoined)
    assert (joined.member.id, joined.inviter.id, joined.join_type, joined.group.id) == (
        "U0CY",
        ANN,
        "invited",
        GENERAL,
    )
    assert one(c.event_callback(wrap(slack.member_joined(GENERAL, "U0DEE")))).join_type == "joined"
    left = one(c.event_callback(wrap(slack.member_left(GENERAL, "U0CY"))))
    assert isinstance(left, MemberLeft) and left.member.id == "U0CY"


def test_the_bot_itself_invited_and_removed(slack: FakeSlack) -> None:
    slack.add_channel("C0NEW", "new", members=[ANN], bot=False)
    invited = one(converter().event_callback(wrap(slack.member_joined("C0NEW", BOT_USER, inviter=ANN))))
    assert (
        isinstance(invited, BotInvitedToGroup) and invited.inviter.id == ANN and invited.group.id == "C0NEW"
    )
    removed = one(converter().event_callback(wrap(slack.member_left("C0NEW", BOT_USER))))
    assert isinstance(removed, BotRemovedFromGroup)


def test_renames(slack: FakeSlack) -> None:
    for channel in (GENERAL, SECRET_ROOM):
        event = one(converter().event_callback(wrap(slack.rename(channel, "renamed"))))
        assert isinstance(event, GroupInfoUpdated)
        assert (
            event.group.id == channel and event.group.name == "renamed" and event.changed_fields == ["name"]
        )


# ---------------------------------------------------------------------- interactivity


@pytest.mark.parametrize(("value", "kind"), [("like", 1), ("dislike", 2), ("cancel", 3), ("open-ticket", 0)])
def test_block_actions_become_feedback(slack: FakeSlack, value: str, kind: int) -> None:
    message = slack.message(GENERAL, BOT_USER, "answer", bot_id=BOT_ID)
    payload = slack.block_action(GENERAL, message["ts"], ANN, "rate", value)
    event = one(converter().interactive(payload))
    assert isinstance(event, FeedbackReceived)
    assert (event.feedback_id, event.feedback_type, event.feedback_content) == ("rate", kind, value)
    assert (event.user_id, event.chat_id, event.message_id) == (ANN, GENERAL, message["ts"])
    assert event.raw["trigger_id"] == payload["trigger_id"] and event.raw["response_url"]
    assert event.session_key().name == f"group:{GENERAL}"
    assert converter().interactive(payload)[0].dedup_key == event.dedup_key


def test_other_interactions_and_commands_are_platform_specific(slack: FakeSlack) -> None:
    view = {"type": "view_submission", "user": {"id": ANN}, "trigger_id": "1.2.3", "view": {"id": "V1"}}
    event = one(converter().interactive(view))
    assert isinstance(event, PlatformSpecific) and event.action == "view_submission" and event.chat_id is None
    command = one(converter().slash_command(slack.slash_command(GENERAL, ANN, "/deploy", "prod")))
    assert command.action == "slash_command" and command.chat_id == GENERAL and command.data["text"] == "prod"


def test_an_odd_payload_is_kept_not_lost() -> None:
    broken = wrap({"type": "message", "channel": GENERAL, "files": "not-a-list", "text": 5, "user": ANN})
    events = converter(channel_messages="all").event_callback(broken)
    assert len(events) == 1 and events[0].dedup_key


@pytest.mark.parametrize("thread_ts", [[None], {"a": 1}, 12, ""])
def test_a_thread_ts_that_is_not_a_string_is_no_thread(thread_ts: Any) -> None:
    """Found by the long fuzz: a signed event whose ``thread_ts`` was a list reached the
    backlog as a session key holding it (unhashable: HTTP 500). Slack's ts are strings."""
    payload = {
        "token": "",
        "type": "event_callback",
        "event": {
            "subtype": "message_changed",
            "message": None,
            "type": "app_mention",
            "files": None,
            "thread_ts": thread_ts,
        },
    }
    events = converter().event_callback(payload)
    assert events
    for event in events:
        key = event.session_key()
        hash(key)
        assert key.thread in (None, "")
