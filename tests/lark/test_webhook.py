"""Webhook mode against the fake platform's signed, encrypted deliveries: the
URL challenge, 401 for a bad signature or token (nothing stored), decryption,
200 only after the commit, retries deduplicated, card actions on one path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from callboard.adapters.lark.crypto import decrypt, encrypt, signature, signature_ok
from callboard.app import Running
from callboard.engine.events import FeedbackReceived, MessageReceived
from callboard.testing.fake_lark import ENCRYPT_KEY, VERIFICATION_TOKEN, FakeLark
from callboard.testing.fake_lark import encrypt as platform_encrypt
from tests.lark.conftest import ANN, BOT, lark_fleet, running, stored_events
from tests.support import eventually, stall_appends

pytestmark = pytest.mark.timeout(60)


def url(fleet: Running) -> str:
    return f"{fleet.base_url}/lark/{BOT}/events"


async def up(fleet: Running, lark: FakeLark) -> str:
    await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
    lark.webhook_url = url(fleet)
    return lark.webhook_url


def test_our_crypto_reads_what_the_platform_and_lark_oapi_write() -> None:
    from lark_oapi.core.utils import AESCipher

    plain = orjson.dumps({"challenge": "c", "text": "héllo" * 20})
    sealed = platform_encrypt(ENCRYPT_KEY, plain)
    assert decrypt(ENCRYPT_KEY, sealed) == plain
    ours = encrypt(ENCRYPT_KEY, plain)
    assert AESCipher(ENCRYPT_KEY).decrypt_str(ours).encode() == plain  # the SDK reads ours too
    assert signature_ok("1", "n", ENCRYPT_KEY, b"{}", signature("1", "n", ENCRYPT_KEY, b"{}"))
    assert not signature_ok("1", "n", ENCRYPT_KEY, b"{} ", signature("1", "n", ENCRYPT_KEY, b"{}"))


async def test_challenge_then_encrypted_signed_events(tmp_path: Path, lark_encrypted: FakeLark) -> None:
    lark = lark_encrypted
    lark.add_user(ANN, "Ann")
    chat = lark.p2p(ANN)
    async with running(lark_fleet(tmp_path, lark, mode="webhook")) as fleet:
        target = await up(fleet, lark)
        status, answer = await lark.url_verification(target)
        assert status == 200 and set(answer) == {"challenge"}
        status, answer = await lark.url_verification(target, token="wrong")
        assert status == 401
        for text in ("one", "two"):
            lark.push(lark.message_event(chat, ANN, text))
        await lark.wait_acked()
        await lark.wait_calls("send_message", 2)
        assert lark.texts_sent() == ["one", "two"]
        assert lark.webhook_statuses == [200, 200]
        events = await stored_events(fleet)
        assert [e.text for e in events if isinstance(e, MessageReceived)] == ["one", "two"]


@pytest.mark.parametrize(
    "forgery",
    ["bad signature", "no signature", "wrong key", "wrong token", "not json", "plain body"],
)
async def test_forged_deliveries_are_refused_and_touch_nothing(
    tmp_path: Path, lark_encrypted: FakeLark, forgery: str
) -> None:
    lark = lark_encrypted
    lark.add_user(ANN, "Ann")
    payload = lark.message_event(lark.p2p(ANN), ANN, "forged")
    async with running(lark_fleet(tmp_path, lark, mode="webhook")) as fleet:
        target = await up(fleet, lark)
        body, headers = lark.webhook_body(payload)
        expected = 401
        if forgery == "bad signature":
            headers["X-Lark-Signature"] = "0" * 64
        elif forgery == "no signature":
            del headers["X-Lark-Signature"]
        elif forgery == "wrong key":
            body, headers = lark.webhook_body(payload, encrypt_key="another key")
        elif forgery == "wrong token":
            payload["header"]["token"] = "forged-token"
            body, headers = lark.webhook_body(payload)
        elif forgery == "not json":
            body, expected = b"{nope", 400
        else:  # unencrypted, though this bot has an encrypt key: unsigned, so refused
            body, headers = lark.webhook_body(payload, encrypt_key="", sign_key="")
        status, answer = await lark.post(target, body, headers)
        assert status == expected, answer
        assert answer["msg"]
        await asyncio.sleep(0.2)
        assert await stored_events(fleet) == []
        assert not lark.sent


async def test_plain_webhook_with_token_only(tmp_path: Path, lark: FakeLark) -> None:
    lark.add_user(ANN, "Ann")
    async with running(lark_fleet(tmp_path, lark, mode="webhook")) as fleet:
        target = await up(fleet, lark)
        status, answer = await lark.url_verification(target)
        assert status == 200 and answer["challenge"]
        lark.push(lark.message_event(lark.p2p(ANN), ANN, "plain"))
        await lark.wait_calls("send_message", 1)
        payload = lark.message_event(lark.p2p(ANN), ANN, "x")
        payload["header"]["token"] = "nope"
        body, headers = lark.webhook_body(payload)
        assert (await lark.post(target, body, headers))[0] == 401


async def test_200_only_after_the_commit_and_retries_dedup(
    tmp_path: Path, lark_encrypted: FakeLark, monkeypatch: pytest.MonkeyPatch
) -> None:
    lark = lark_encrypted
    lark.add_user(ANN, "Ann")
    async with running(lark_fleet(tmp_path, lark, mode="webhook", handlers="")) as fleet:
        target = await up(fleet, lark)
        payload = lark.message_event(lark.p2p(ANN), ANN, "durable")
        stall_appends(monkeypatch, fleet, seconds=1.0, count=1)
        body, headers = lark.webhook_body(payload)
        started = asyncio.get_running_loop().time()
        status, _ = await lark.post(target, body, headers)
        assert status == 200 and asyncio.get_running_loop().time() - started >= 0.9
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(1,)]
        for _ in range(3):  # Lark's retries of the same event
            body, headers = lark.webhook_body(payload)
            assert (await lark.post(target, body, headers))[0] == 200
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(1,)]


async def test_a_failed_store_is_answered_500_and_the_retry_lands(
    tmp_path: Path, lark_encrypted: FakeLark, monkeypatch: pytest.MonkeyPatch
) -> None:
    lark = lark_encrypted
    lark.add_user(ANN, "Ann")
    async with running(lark_fleet(tmp_path, lark, mode="webhook")) as fleet:
        target = await up(fleet, lark)
        real = fleet.journal.append
        failures = [OSError("disk full")]

        def append(*args: object) -> asyncio.Future[int | None]:
            if failures:
                future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
                future.set_exception(failures.pop())
                return future
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(fleet.journal, "append", append)
        lark.webhook_url = target
        lark.push(lark.message_event(lark.p2p(ANN), ANN, "retried"))
        await lark.wait_acked()
        assert lark.webhook_statuses == [500, 200]
        await lark.wait_calls("send_message", 1)


async def test_card_actions_on_the_same_path(tmp_path: Path, lark_encrypted: FakeLark) -> None:
    lark = lark_encrypted
    lark.add_chat("oc_g", name="G", members=[ANN])
    async with running(lark_fleet(tmp_path, lark, mode="webhook", handlers="")) as fleet:
        target = await up(fleet, lark)
        action = {
            "operator": {"open_id": ANN},
            "token": "c-1",
            "action": {"tag": "button", "value": {"feedback": "like"}},
            "context": {"open_message_id": "om_c", "open_chat_id": "oc_g"},
        }
        body, headers = lark.webhook_body(lark.envelope("card.action.trigger", action))
        status, answer = await lark.post(target, body, headers)
        assert status == 200 and answer == {}
        (event,) = await stored_events(fleet)
        assert isinstance(event, FeedbackReceived) and event.feedback_type == 1 and event.chat_id == "oc_g"
    assert VERIFICATION_TOKEN not in repr(event)
