"""The journal sharded over PostgreSQL databases (real servers' databases, see
conftest.py): where each row goes, seqs that name their shard, a layout that
cannot be reshuffled by editing the list, one failing shard named without its
password, and the ``engine.journal`` list that selects it. The whole journal
suite also runs on two shards (the ``sharded`` backend of every test)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from callboard.actors.config_file import ConfigError, parse_fleet
from callboard.app import make_journal
from callboard.engine.clock import ManualClock
from callboard.engine.events import SessionKey
from callboard.engine.journal import JournalUnusable, StorageUnavailable
from callboard.engine.journal_pg import PgJournal
from callboard.engine.journal_sharded import ShardedJournal, chat_hash
from callboard.testing.postgres import PostgresServer
from tests.journal.test_journal import message
from tests.journal.test_storage_failure import Storage

pytestmark = pytest.mark.timeout(60)

CHATS = [f"c{i}" for i in range(12)]


def with_password(url: str) -> str:
    """The server trusts 127.0.0.1, so a password is accepted and ignored: errors must still hide it."""
    return url.replace("callboard@", "callboard:hunter2secret@")


@pytest.fixture
def urls(postgres: PostgresServer) -> list[str]:
    return [with_password(postgres.create_database("s")) for _ in range(3)]


@pytest.fixture
async def sharded(urls: list[str]) -> AsyncIterator[ShardedJournal]:
    journal = ShardedJournal(urls[:2], path="unused")
    await journal.open()
    yield journal
    await journal.close()


async def rows(shard: PgJournal, sql: str) -> set[object]:
    return {row[0] for row in await shard.query(sql)}


async def test_a_chat_lives_on_one_shard_and_seqs_name_it(sharded: ShardedJournal) -> None:
    seqs: dict[str, list[int]] = {}
    for n in range(60):
        chat = CHATS[n % len(CHATS)]
        event = message(n, chat=chat)
        seq = await sharded.append(event, event.session_key())
        assert seq is not None
        seqs.setdefault(chat, []).append(seq)
    on = [await rows(shard, "SELECT session FROM events") for shard in sharded.shards]
    assert on[0] and on[1], "twelve chats all on one shard: the hash does not spread"
    for chat, chat_seqs in seqs.items():
        home = sharded.shard_of_chat("b", chat)
        index = sharded.shards.index(home)
        assert [f"private:{chat}" in names for names in on] == [i == index for i in range(2)]
        assert all((seq - 1) % 2 == index for seq in chat_seqs)  # the seq says the shard
        assert chat_seqs == sorted(chat_seqs)  # in order within the chat
        assert set(chat_seqs) == await rows(home, f"SELECT seq FROM events WHERE session='private:{chat}'")
        assert chat_hash("b", chat) % 2 == index

    # everything else about a chat follows it: state, runs and their receipts, stored output
    for chat, chat_seqs in seqs.items():
        home = sharded.shards.index(sharded.shard_of_chat("b", chat))
        other = sharded.shards[1 - home]
        key = SessionKey("b", "private", chat)
        await sharded.save_state("b", key, {"chat": chat})
        run_id = max(chat_seqs)
        sharded.record_run(run_id, chat_seqs)
        sharded.store_receipt(f"reply:{chat}", "b", run_id, key.name, f"pm-{chat}")
        await sharded.append_outbox("b", chat, {"text": chat})
        await sharded.flush()
        for table in ("session_state", "run_members", "receipts", "outbox"):
            assert await other.query(f"SELECT COUNT(*) FROM {table} WHERE {_of(table, chat, run_id)}") == [
                (0,)
            ]
            assert await sharded.shards[home].query(
                f"SELECT COUNT(*) FROM {table} WHERE {_of(table, chat, run_id)}"
            ) != [(0,)]
        assert await sharded.load_state("b", key) == {"chat": chat}
        receipt = await sharded.receipt(f"reply:{chat}")
        assert receipt is not None and receipt.message_id == f"pm-{chat}"
        assert await sharded.read_outbox("b", chat) == [(1, {"text": chat, "seq": 1})]


def _of(table: str, chat: str, run_id: int) -> str:
    if table in ("run_members", "receipts"):
        return f"run_id={run_id}"
    if table == "outbox":
        return f"chat='{chat}'"
    return f"session='private:{chat}'"


async def test_pending_merges_the_shards_and_marks_go_to_each_seqs_shard(sharded: ShardedJournal) -> None:
    seqs = []
    for n in range(24):
        event = message(n, chat=CHATS[n % len(CHATS)])
        seq = await sharded.append(event, event.session_key())
        assert seq is not None
        seqs.append(seq)
    assert {(s - 1) % 2 for s in seqs} == {0, 1}
    sharded.mark_done(seqs[:8])  # seqs of both shards in one call
    await sharded.mark_done_now(seqs[8:12], status="failed")
    await sharded.flush()
    pending = await sharded.pending("b")
    assert [p.seq for p in pending] == sorted(seqs[12:])
    by_chat: dict[str, list[int]] = {}
    for p in pending:
        by_chat.setdefault(p.event.chat_id, []).append(p.seq)  # type: ignore[attr-defined]
    assert all(chat_seqs == sorted(chat_seqs) for chat_seqs in by_chat.values())
    assert [await sharded.event_status(s) for s in seqs[6:10]] == ["done", "done", "failed", "failed"]
    key = SessionKey("b", "private", CHATS[1])
    assert [p.seq for p in await sharded.pending_for_session("b", key)] == by_chat[CHATS[1]]


async def test_the_layout_cannot_be_reshuffled_by_editing_the_list(urls: list[str]) -> None:
    first = ShardedJournal(urls[:2], path="unused")
    await first.open()
    await first.close()
    for changed, says in (
        ([urls[1], urls[0]], "is recorded as shard 1 of 2"),  # the order swapped
        (urls, "is recorded as shard 0 of 2"),  # a shard added
        (urls[:1], "is recorded as shard 0 of 2"),  # a shard dropped
    ):
        journal = ShardedJournal(changed, path="unused")
        with pytest.raises(JournalUnusable, match=says) as raised:
            await journal.open()
        assert "docs/scale-out.md" in str(raised.value) and "hunter2secret" not in str(raised.value)
        assert "callboard:***@" in str(raised.value)
        assert not journal.is_open and not any(shard.is_open for shard in journal.shards)
    again = ShardedJournal(urls[:2], path="unused")  # the recorded layout opens as before
    await again.open()
    await again.close()


async def test_an_unreachable_shard_is_named_and_the_others_are_closed(urls: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    journal = ShardedJournal(
        [urls[0], f"postgresql://u:hunter2secret@127.0.0.1:{port}/db"], path="unused", connect_timeout=1.0
    )
    with pytest.raises(JournalUnusable, match=r"^shard 1 of 2: journal postgresql://u:\*\*\*@") as raised:
        await journal.open()
    assert "hunter2secret" not in str(raised.value)
    assert not any(shard.is_open for shard in journal.shards)


async def test_an_unsharded_database_is_not_sharded_in_place(urls: list[str]) -> None:
    plain = PgJournal(urls[0], path="unused")
    await plain.open()
    await plain.append(message(1), message(1).session_key())
    await plain.close()
    journal = ShardedJournal(urls[:2], path="unused")
    with pytest.raises(JournalUnusable, match="holds events of an unsharded journal"):
        await journal.open()


async def test_seqs_are_never_handed_out_twice_when_an_emptied_database_becomes_a_shard(
    urls: list[str],
) -> None:
    """Receipts name runs by seq: an old run's receipt must never match a new run."""
    clock = ManualClock()
    plain = PgJournal(urls[2], path="unused", retention_seconds=0, dedup_window_seconds=0, clock=clock)
    await plain.open()
    old = [await plain.append(message(n), message(n).session_key()) for n in range(5)]
    await plain.mark_done_now([s for s in old if s is not None])
    await clock.advance(1)
    assert (await plain.prune())["events"] == 5
    await plain.close()
    journal = ShardedJournal([urls[0], urls[2]], path="unused")
    await journal.open()
    try:
        for n in range(40):
            event = message(100 + n, chat=CHATS[n % len(CHATS)])
            seq = await journal.append(event, event.session_key())
            assert seq is not None
            if journal.shard_of_seq(seq) is journal.shards[1]:
                assert seq > max(s for s in old if s is not None) and (seq - 1) % 2 == 1
    finally:
        await journal.close()


async def test_one_failing_shard_is_named_and_refuses_only_its_chats(urls: list[str]) -> None:
    clock = ManualClock()
    journal = ShardedJournal(urls[:2], path="unused", clock=clock)
    await journal.open()
    try:
        broken = journal.shards[1]
        on_broken = next(c for c in CHATS if journal.shard_of_chat("b", c) is broken)
        on_healthy = next(c for c in CHATS if journal.shard_of_chat("b", c) is not broken)
        storage = Storage(journal, [urls[1]])
        storage.fail()
        with pytest.raises(StorageUnavailable, match=r"callboard:\*\*\*@"):
            await journal.append(message(1, chat=on_broken), message(1, chat=on_broken).session_key())
        problem = journal.storage_problem
        assert problem is not None and problem.startswith("shard 1 (postgresql://callboard:***@")
        assert "read-only" in problem and "hunter2secret" not in problem
        assert await journal.append(message(2, chat=on_healthy), message(2, chat=on_healthy).session_key())
        with pytest.raises(StorageUnavailable):
            await journal.write_probe()  # the journal as a whole is not healthy
        storage.heal()
        await clock.advance(60)
        await journal.settled()
        assert journal.storage_problem is None
        await journal.wait_writable()
        assert await journal.append(message(3, chat=on_broken), message(3, chat=on_broken).session_key())
    finally:
        await journal.close()


# ---------------------------------------------------------------------- configuration


def test_a_list_of_urls_selects_the_sharded_journal_and_stays_secret() -> None:
    config = parse_fleet("engine: {journal: ['postgresql://cb:hunter2secret@db1/cb', 'postgresql://db2/cb']}")
    journal = config.engine.journal
    assert journal.urls == ["postgresql://cb:hunter2secret@db1/cb", "postgresql://db2/cb"]
    assert "hunter2secret" not in repr(config)
    built = make_journal(journal)
    assert isinstance(built, ShardedJournal) and [s.name for s in built.shards] == [
        "postgresql://cb:***@db1/cb",
        "postgresql://db2/cb",
    ]
    # a single URL stays the one-database journal
    assert isinstance(
        make_journal(parse_fleet("engine: {journal: 'postgresql://db/cb'}").engine.journal), PgJournal
    )


@pytest.mark.parametrize(
    ("journal", "says"),
    [
        ("[]", "needs at least one postgresql:// URL"),
        ("[var/j.sqlite3, 'postgresql://db/cb']", "shard 0: must be a postgresql:// URL"),
        ("['postgresql://db/cb', 7]", "shard 1: must be a postgresql:// URL"),
        (
            "['postgresql://a:hunter2secret@db/cb', 'postgresql://b@db:5432/cb']",
            "shards 0 and 1 are the same",
        ),
        ("{url: {a: 1}}", "a postgresql:// URL, or a list of them"),
    ],
)
def test_a_bad_list_is_refused_naming_the_key(journal: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"engine\.journal\.url") as raised:
        parse_fleet(f"engine: {{journal: {journal}}}")
    assert says in str(raised.value) and "hunter2secret" not in str(raised.value)


def test_a_cluster_takes_a_sharded_journal() -> None:
    config = parse_fleet(
        "engine: {journal: ['postgresql://db1/cb', 'postgresql://db2/cb'], "
        "cluster: {nats: 'nats://n', node: a}}"
    )
    assert config.engine.cluster is not None


async def test_the_bench_measures_one_database_and_two_shards(postgres: PostgresServer) -> None:
    """``callboard bench journal --shards`` end to end on small numbers (figures not asserted)."""
    from callboard.bench.journal import measure_shards

    for shards in (1, 2):
        row = await measure_shards([postgres, postgres], shards, batch=20, total=100)
        assert row["shards"] == shards and row["events"] == 100 and row["commits"] >= 5
        assert row["wal_bytes_per_event"] > 0 and row["stored_bytes_per_event"] >= 0
