"""The ``adapter:`` block of a Lark bot: names, defaults, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.actors.config_file import ConfigError, load_fleet, parse_fleet
from callboard.adapters.lark.config import LarkAdapterConfig

ROOT = Path(__file__).resolve().parents[2]


def config(block: str) -> str:
    return f"name: t\nbots:\n  - id: lk\n    adapter:\n{block}    handlers: []\n"


def test_defaults_and_domains() -> None:
    fleet = parse_fleet(config("      type: lark\n      app_id: cli_1\n      app_secret: s3cret\n"), "f.yaml")
    adapter = fleet.bots[0].adapter
    assert isinstance(adapter, LarkAdapterConfig)
    assert (adapter.mode, adapter.app_type, adapter.stream_replies, adapter.domain) == (
        "ws",
        "self",
        False,
        "feishu",
    )
    assert adapter.base_url == "https://open.feishu.cn"
    assert (
        LarkAdapterConfig(app_id="a", app_secret="b", domain="lark").base_url == "https://open.larksuite.com"
    )  # type: ignore[arg-type]
    assert (
        LarkAdapterConfig(app_id="a", app_secret="b", domain="http://127.0.0.1:9/").base_url
        == "http://127.0.0.1:9"
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "      type: lark\n      app_id: cli_1\n      app_secret: s3cret\n      mode: webhook\n",
            "verification_token",
        ),
        (
            "      type: lark\n      app_id: cli_1\n      app_secret: s3cret\n      app_type: isv\n",
            "webhook only",
        ),
        (
            "      type: lark\n      app_id: cli_1\n      app_secret: s3cret\n      domain: ftp://x\n",
            "feishu, lark",
        ),
        ("      type: lark\n      app_id: cli_1\n", "app_secret"),
        ("      type: lark\n      app_id: cli_1\n      app_secret: s3cret\n      mode: socket\n", "mode"),
    ],
)
def test_errors_name_the_key_and_never_the_secret(block: str, message: str) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_fleet(config(block), "f.yaml")
    text = str(failure.value)
    assert message in text and "f.yaml" in text and "s3cret" not in text


def test_the_example_fleet_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LARK_APP_ID", "cli_example")
    monkeypatch.setenv("LARK_APP_SECRET", "example-secret")
    fleet = load_fleet(ROOT / "config" / "lark.example.yaml")
    adapter = fleet.bots[0].adapter
    assert (
        isinstance(adapter, LarkAdapterConfig) and adapter.app_id == "cli_example" and adapter.stream_replies
    )


def test_ws_mode_refused_for_an_sdk_outside_the_tested_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """longconn drives private parts of lark-oapi's ws client: another release is refused when
    the file is read, with what to install; webhook mode does not care."""
    from callboard.adapters.lark import sdk

    monkeypatch.setattr(sdk.metadata, "version", lambda _name: "1.9.2")
    with pytest.raises(ConfigError) as caught:
        parse_fleet(config("      type: lark\n      app_id: cli_1\n      app_secret: s3cret\n"), "f.yaml")
    text = str(caught.value)
    assert "f.yaml" in text and "lark-oapi 1.9.2 is installed" in text and "lark-oapi>=1.4,<1.8" in text
    assert "s3cret" not in text
    webhook = "      type: lark\n      app_id: cli_1\n      app_secret: s\n      mode: webhook\n"
    parse_fleet(config(webhook + "      verification_token: v\n"), "f.yaml")


def test_sdk_versions_and_driven_internals() -> None:
    import lark_oapi.ws.client as ws_client

    from callboard.adapters.lark.sdk import missing_internals, sdk_version_problem

    assert sdk_version_problem() is None  # the installed one is in range
    assert sdk_version_problem("1.7.5") is None and sdk_version_problem("1.4.0") is None
    assert sdk_version_problem("1.8.0") is not None and sdk_version_problem("1.3.6") is not None
    assert sdk_version_problem("2.0.0rc1") is not None
    assert missing_internals(ws_client.Client) == []  # the installed SDK has all we drive
    assert missing_internals(object) == [
        "_connect",
        "_disconnect",
        "_ping_loop",
        "_handle_message",
        "_combine",
        "_write_message",
    ]
