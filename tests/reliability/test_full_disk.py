"""A full disk loses no acknowledged event.

The journal lives on a small tmpfs mounted by the test (root only). Messages
are acknowledged, the disk fills before their debounced replies are stored,
more messages arrive while it is full (refused, not acknowledged), then space
is freed. Without a restart every acknowledged message is answered, nothing
is marked failed, and new messages are accepted again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callboard.actors.config_file import parse_fleet
from callboard.app import Running
from tests.support import ChatClient, eventually, running_fleet

pytestmark = pytest.mark.timeout(120)

FLEET = """
name: full-disk
engine:
  journal: {journal}
  admin: {{host: 127.0.0.1, port: 0}}
  shutdown_timeout: 10s
bots:
  - id: demo
    adapter: {{type: web}}
    session:
      debounce: {{window: 300ms, max_wait: 2s}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``; skips (saying why) when it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs for the journal (run as root to include it)")
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as filler:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * chunk
            while True:
                try:
                    written += filler.write(block) or 0
                except OSError:
                    break
    return written


async def ready(base_url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/readyz") as response:
        return response.status, await response.json()


def answered(client: ChatClient) -> set[str]:
    return {line for f in client.of("message") for line in f["text"].split("\n")}


async def test_full_disk_loses_no_acknowledged_message(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        filler = disk / "filler"

        def full(_: Running) -> None:
            assert fill(filler) > 0

        await outage(disk / "journal.sqlite3", full, lambda _: filler.unlink())


async def test_read_only_storage_loses_no_acknowledged_message(tmp_path: Path) -> None:
    """The same without root: SQLite refuses every write (``PRAGMA query_only`` on the
    journal's connection, SQLITE_READONLY, as after a read-only remount)."""

    def journal_conn(fleet: Running) -> sqlite3.Connection:
        conn = fleet.journal._conn  # the pragma is per connection: it must be the journal's own
        assert conn is not None
        return conn

    def read_only(fleet: Running) -> None:
        journal_conn(fleet).execute("PRAGMA query_only=1")

    def writable(fleet: Running) -> None:
        journal_conn(fleet).execute("PRAGMA query_only=0")

    await outage(tmp_path / "journal.sqlite3", read_only, writable)


async def outage(
    journal: Path, break_storage: Callable[[Running], None], heal_storage: Callable[[Running], None]
) -> None:
    """Acknowledged messages whose replies meet a failing storage, refusals while it
    fails, recovery without a restart: every acknowledged message answered once."""
    config = parse_fleet(FLEET.format(journal=journal), "full-disk.yaml")
    sent: dict[str, str] = {}  # client_msg_id -> text
    chats = [f"c{i}" for i in range(8)]
    async with running_fleet(config) as fleet:
        client = await ChatClient.connect(fleet.base_url)
        try:
            for chat in chats:
                await client.subscribe(chat)
            for i in range(40):  # acknowledged; replies wait for the debounce window
                text = f"before{i}"
                sent[await client.say(text, chat_id=chats[i % len(chats)])] = text
            await client.wait_count("ack", 40)
            break_storage(fleet)

            for i in range(20):  # while the storage fails: refused, never acknowledged
                text = f"during{i}"
                sent[await client.say(text, chat_id=chats[i % len(chats)])] = text
                await asyncio.sleep(0.05)
            refused = await client.wait_count("error", 1)
            status, body = await _unready(fleet.base_url, timeout=10)
            await asyncio.sleep(1.0)  # windows close, runs meet the failing storage
            statuses = dict(await fleet.journal.query("SELECT status, COUNT(*) FROM events GROUP BY status"))

            heal_storage(fleet)  # everything resumes by itself
            await eventually(lambda: _is_ready(fleet.base_url), timeout=60)
            acked = {sent[f["client_msg_id"]] for f in client.of("ack")}
            await eventually(lambda: acked <= answered(client), timeout=60, interval=0.1)

            for i in range(8):  # and new messages are accepted again
                text = f"after{i}"
                sent[await client.say(text, chat_id=chats[i])] = text
            await eventually(lambda: {f"after{i}" for i in range(8)} <= answered(client), timeout=30)
            acked = {sent[f["client_msg_id"]] for f in client.of("ack")}
        finally:
            await client.close()

    rows = dict(sqlite3.connect(journal).execute("SELECT status, COUNT(*) FROM events GROUP BY status"))
    replies = collections.Counter(line for f in client.of("message") for line in f["text"].split("\n"))
    print(
        f"\nacknowledged {len(acked)}, refused while failing {len(client.of('error'))}, "
        f"answered {len(answered(client) & acked)}, journal {rows}"
    )
    assert acked <= answered(client), f"acknowledged, never answered: {sorted(acked - answered(client))}"
    assert not [t for t, n in replies.items() if n > 1], "answered twice"
    assert "failed" not in statuses and "failed" not in rows, rows
    assert rows.get(None, 0) == 0, f"events still pending: {rows}"
    assert all(f["code"] == "unavailable" for f in refused)
    assert status == 503 and any("storage" in p for p in body["problems"]), body
    assert all(text not in answered(client) for text in sent.values() if text not in acked)


async def _unready(base_url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """/readyz once it says unready, or its last answer after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await ready(base_url)
        if status == 503 or asyncio.get_running_loop().time() > deadline:
            return status, body
        await asyncio.sleep(0.1)


async def _is_ready(base_url: str) -> bool:
    status, _ = await ready(base_url)
    return status == 200


async def test_full_disk_telegram_polling_confirms_nothing_it_cannot_store(tmp_path: Path) -> None:
    """Long polling on a full disk: updates stay unconfirmed (Telegram keeps them),
    the connection waits instead of failing, and all are answered once space returns."""
    from callboard.testing.fake_telegram import FakeBotAPI, private_chat, user
    from tests.telegram.conftest import telegram_fleet

    api = await FakeBotAPI().start()
    try:
        with small_disk(tmp_path / "disk", "8m") as disk:
            config = telegram_fleet(disk, api)
            ann = user(1001, "Ann")
            chat = api.add_chat(private_chat(ann))
            async with running_fleet(config) as fleet:
                for i in range(10):
                    api.push("message", api.message(chat, ann, f"before{i}"))
                await api.wait_confirmed()
                fill(disk / "filler")
                for i in range(10):
                    api.push("message", api.message(chat, ann, f"during{i}"))
                await asyncio.sleep(3.0)
                unconfirmed = len(api.pending)
                (disk / "filler").unlink()
                await api.wait_confirmed(timeout=60)

                def texts() -> set[str]:
                    return {c["text"] for c in api.calls_of("sendMessage") if c.status == 200}

                wanted = {f"before{i}" for i in range(10)} | {f"during{i}" for i in range(10)}
                await eventually(lambda: wanted <= texts(), timeout=60)
                assert fleet.stats.connections["tg"][0]
            rows = dict(
                sqlite3.connect(disk / "journal.sqlite3").execute(
                    "SELECT status, COUNT(*) FROM events GROUP BY status"
                )
            )
    finally:
        await api.close()
    print(f"\nunconfirmed while full: {unconfirmed} of 10; journal {rows}")
    assert unconfirmed > 0, "updates were confirmed to Telegram while the journal could not store them"
    assert "failed" not in rows and rows.get(None, 0) == 0, rows


async def test_failing_storage_webhook_answers_503_until_it_heals(tmp_path: Path) -> None:
    """A Telegram webhook delivery that cannot be stored is answered 503 (not 200:
    Telegram redelivers), and the redelivery after recovery is answered."""
    from callboard.bench.harness import free_port
    from callboard.testing.fake_telegram import FakeBotAPI, private_chat, user
    from tests.telegram.conftest import UNLIMITED, running, telegram_fleet

    api = await FakeBotAPI().start()
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}/telegram/tg/webhook"
        adapter = f"{UNLIMITED}\nmode: webhook\nwebhook_url: {url}\nsecret_token: s3cret-Token_1\n"
        config = telegram_fleet(tmp_path, api, adapter=adapter, port=port)
        ann = user(1001, "Ann")
        chat = api.add_chat(private_chat(ann))
        async with running(config) as fleet:
            await eventually(lambda: fleet.stats.connections.get("tg", (False, ""))[0])
            conn = fleet.journal._conn  # the pragma is per connection: it must be the journal's own
            assert conn is not None
            conn.execute("PRAGMA query_only=1")
            api.push("message", api.message(chat, ann, "while-failing"))
            await eventually(lambda: api.webhook is not None and 503 in api.webhook.statuses, timeout=20)
            assert not [c for c in api.calls_of("sendMessage") if c.status == 200]
            conn.execute("PRAGMA query_only=0")
            await api.wait_confirmed(timeout=60)
            await api.wait_calls("sendMessage", 1)
            assert [c["text"] for c in api.answered("sendMessage")] == ["while-failing"]
            assert api.webhook is not None and api.webhook.statuses[-1] == 200
    finally:
        await api.close()
