"""Secrets from the fleet file are masked in every log line, tracebacks included."""

from __future__ import annotations

import logging

import pytest

from callboard import logs
from callboard.actors.config_file import parse_fleet


def test_secrets_are_masked_everywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TG_TOKEN", "123456:very-secret-token")
    config = parse_fleet(
        "bots:\n  - id: tg\n    adapter: {type: telegram, token: '${TG_TOKEN}'}\n", "fleet.yaml"
    )
    handler = logging.StreamHandler()
    handler.setFormatter(logs._formatter)
    log = logging.getLogger("some.sdk.created.later")
    log.addHandler(handler)
    try:
        logs.hide_secrets(config)
        log.warning("GET https://api.telegram.org/bot123456:very-secret-token/getMe failed")
        try:
            raise RuntimeError("url was /bot123456:very-secret-token/sendMessage")
        except RuntimeError:
            log.exception("request failed")
    finally:
        log.removeHandler(handler)
    err = capsys.readouterr().err
    assert "very-secret-token" not in err
    assert err.count(logs.MASK) == 3
