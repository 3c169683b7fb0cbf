"""The app secret, encrypt key and verification token never reach a log line,
in either mode, whatever happens (forged deliveries, refused credentials)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from callboard.testing.fake_lark import APP_SECRET, ENCRYPT_KEY, VERIFICATION_TOKEN, Failure, FakeLark
from tests.lark.conftest import ANN, BOT, lark_fleet, running
from tests.support import eventually

pytestmark = pytest.mark.timeout(60)
SECRETS = (APP_SECRET, ENCRYPT_KEY, VERIFICATION_TOKEN)


def clean(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert text, "something should have been logged"
    for secret in SECRETS:
        assert secret not in text


async def test_no_secret_in_the_logs_of_a_webhook_bot(
    tmp_path: Path, lark_encrypted: FakeLark, caplog: pytest.LogCaptureFixture
) -> None:
    lark = lark_encrypted
    lark.add_user(ANN, "Ann")
    with caplog.at_level(logging.DEBUG):
        async with running(lark_fleet(tmp_path, lark, mode="webhook")) as fleet:
            await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0])
            target = f"{fleet.base_url}/lark/{BOT}/events"
            payload = lark.message_event(lark.p2p(ANN), ANN, "hi")
            body, headers = lark.webhook_body(payload)
            headers["X-Lark-Signature"] = "f" * 64
            assert (await lark.post(target, body, headers))[0] == 401
            body, headers = lark.webhook_body(payload, encrypt_key="wrong")
            assert (await lark.post(target, body, headers))[0] == 401
            lark.fail("send_message", Failure.server_error(500), Failure.token_invalid())
            lark.webhook_url = target
            lark.push(payload)
            await lark.wait_calls("send_message", 1, timeout=20)
    clean(caplog)


async def test_no_secret_in_the_logs_of_a_long_connection_bot(
    tmp_path: Path, lark: FakeLark, caplog: pytest.LogCaptureFixture
) -> None:
    lark.add_user(ANN, "Ann")
    lark.fail("ws_endpoint", Failure.server_error(503))
    with caplog.at_level(logging.DEBUG):
        async with running(lark_fleet(tmp_path, lark)) as fleet:
            await eventually(lambda: fleet.stats.connections.get(BOT, (False, ""))[0], timeout=20)
            lark.push(lark.message_event(lark.p2p(ANN), ANN, "hi"))
            await lark.wait_calls("send_message", 1)
            await lark.drop_connections()
            await eventually(lambda: lark.connects >= 2, timeout=20)
    clean(caplog)
