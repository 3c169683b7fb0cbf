"""The journal's CPU per event at a given number of events per commit.

Each event goes through what the hot path asks of the journal: an append with
its dedup key (one commit, awaited: the ack waits for it), then its reply and
its done mark, on one of two paths (``--reply``): ``web``, the reply stored in
the outbox and the done mark in one commit, awaited at commit as a session
does (a web chat reply); ``receipt``, the done mark and a send receipt in the
background (a reply sent to a platform without idempotent sends). ``--batch`` events
are appended in one loop turn, so they share one transaction and one fsync,
as a busy connection's events do. CPU is the process's (the loop thread and
the fsync thread); the real disk is used (synchronous=FULL), so the events/s
column is the disk's as much as the journal's.

``--shards 1 2`` measures the PostgreSQL journal instead, in one run: one
database (``engine.journal: postgresql://...``), then sharded over 2 (a list
of URLs), each shard on its own throwaway server (``initdb`` on this disk,
fsync on, 127.0.0.1), with the same events. Besides the bench's own CPU it
reads per event the servers' CPU (every PostgreSQL process's, from /proc),
the WAL bytes (what a standby receives) and the growth of the databases on
disk: what a shard's primary spends, the figures a capacity model divides by.

    callboard bench journal [--batch 1 40 200] [--reply web receipt] [--events N] [--shards 1 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from callboard.engine.entities import ChatType, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.journal import Journal
from callboard.engine.journal_store import JournalStore
from callboard.engine.loop import run as run_loop

if TYPE_CHECKING:
    from callboard.testing.postgres import PostgresServer

USER = User(id="u1", nickname="u1")


def event(n: int) -> MessageReceived:
    return MessageReceived(
        bot_id="bench",
        adapter="web",
        dedup_key=f"u1:m{n}",
        chat_type=ChatType.PRIVATE,
        chat_id=f"s{n % 1000}",
        message_id=f"u{n}",
        message_chain=MessageChain.of(f"s{n % 1000}:{n}"),
        sender=USER,
    )


async def measure(batch: int, total: int, reply: str = "receipt") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="callboard-bench-journal-") as tmp:
        return await drive(Journal(str(Path(tmp) / "journal.sqlite3")), batch, total, reply=reply)


async def drive(
    journal: JournalStore,
    batch: int,
    total: int,
    servers: Sequence[PostgresServer] = (),
    reply: str = "receipt",
) -> dict[str, Any]:
    """The hot path's writes for ``total`` events, ``batch`` per loop turn."""
    await journal.open()
    try:
        events = [event(n) for n in range(total)]
        commits = journal.commits
        server_cpu, wal = _server_cpu(servers), _wal(servers)
        stored = await _stored(journal) if servers else 0
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, total, batch):
            chunk = events[start : start + batch]
            seqs = await asyncio.gather(*(journal.append(e, e.session_key()) for e in chunk))
            done = [s for s in seqs if s is not None]
            if reply == "web":
                for seq, e in zip(done, chunk, strict=False):
                    text = {"op": "message", "chat_id": e.chat_id, "text": e.text}
                    journal.append_outbox("bench", e.chat_id, text, f"bench:{seq}:0:1")
                committed = journal.mark_done(done)
                if committed is not None:
                    await committed  # at commit, as a session waits before its next event
                continue
            journal.mark_done(done)
            for seq, e in zip(done, chunk, strict=False):
                journal.store_receipt(f"reply:{seq}", "bench", seq, e.session_key().name, f"b{seq}")
        await journal.flush()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        server_cpu, wal = _server_cpu(servers) - server_cpu, _wal(servers) - wal
        stored = await _stored(journal) - stored if servers else 0
        commits = journal.commits - commits
    finally:
        await journal.close()
    row = {
        "reply": reply,
        "events_per_commit": batch,
        "events": total,
        "commits": commits,
        "cpu_us_per_event": cpu / total * 1e6,
        "events_per_s": total / wall,
    }
    if servers:
        row["server_cpu_us_per_event"] = server_cpu / total * 1e6
        row["wal_bytes_per_event"] = wal / total
        row["stored_bytes_per_event"] = stored / total
    return row


async def measure_shards(
    servers: Sequence[PostgresServer], shards: int, batch: int, total: int
) -> dict[str, Any]:
    """One database as a single URL configures it, or ``shards`` databases on as many servers."""
    from callboard.engine.journal_pg import PgJournal
    from callboard.engine.journal_sharded import ShardedJournal

    urls = [servers[i].create_database("bench") for i in range(shards)]
    journal: JournalStore
    if shards == 1:
        journal = PgJournal(urls[0], path="unused", pool_size=4)
    else:
        journal = ShardedJournal(urls, path="unused", pool_size=4)
    return {"shards": shards, **await drive(journal, batch, total, servers[:shards])}


def _server_cpu(servers: Sequence[PostgresServer]) -> float:
    """CPU seconds spent so far by every process of these PostgreSQL servers (the
    postmaster and its children: backends, WAL writer, checkpointer)."""
    tick = os.sysconf("SC_CLK_TCK")
    roots = {int((server.data / "postmaster.pid").read_text().split()[0]) for server in servers}
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid in roots or ppid in roots:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


async def _stored(journal: JournalStore) -> int:
    """Bytes on disk of the journal's databases (every shard's), dead row versions included."""
    return sum(int(n) for (n,) in await journal.query("SELECT pg_database_size(current_database())"))


def _wal(servers: Sequence[PostgresServer]) -> int:
    """Bytes of WAL the servers have written so far (what a standby receives)."""
    import psycopg

    total = 0
    for server in servers:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
            total += int(row[0]) if row is not None else 0
    return total


def run_shards(counts: list[int], batches: list[int], events: int | None) -> list[dict[str, Any]]:
    from callboard.testing.postgres import PostgresServer

    servers = [PostgresServer() for _ in range(max(counts))]
    try:
        for server in servers:
            server.start()
        return [
            run_loop(measure_shards(servers, n, b, events or min(40_000, 2_000 * b)))
            for b in batches
            for n in counts
        ]
    finally:
        for server in servers:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench journal", description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 40, 200], help="events per commit")
    parser.add_argument(
        "--events", type=int, default=None, help="per batch size (default: 2,000 x size, max 40,000)"
    )
    parser.add_argument(
        "--shards",
        type=int,
        nargs="+",
        default=None,
        help="the PostgreSQL journal over these numbers of shards (e.g. 1 2), one server each",
    )
    parser.add_argument(
        "--reply",
        nargs="+",
        choices=["web", "receipt"],
        default=["web", "receipt"],
        help="web: stored reply + done mark in one commit; receipt: done mark + send receipt",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.shards:
        return _print_shards(run_shards(args.shards, args.batch, args.events), args.json)
    rows = [
        run_loop(measure(b, args.events or min(40_000, 2_000 * b), reply))
        for reply in args.reply
        for b in args.batch
    ]
    if args.json:
        print(orjson.dumps({"journal": "SQLite WAL, synchronous=FULL", "runs": rows}).decode())
        return 0
    print("callboard journal: append, then reply + done mark per event (SQLite WAL, synchronous=FULL)")
    print(f"{'reply':>8}{'events/commit':>14}{'events':>9}{'commits':>9}{'CPU µs/event':>14}{'events/s':>10}")
    for row in rows:
        print(
            f"{row['reply']:>8}{row['events_per_commit']:>14}{row['events']:>9,}{row['commits']:>9,}"
            f"{row['cpu_us_per_event']:>14.1f}{row['events_per_s']:>10,.0f}"
        )
    return 0


def _print_shards(rows: list[dict[str, Any]], as_json: bool) -> int:
    single = {row["events_per_commit"]: row["events_per_s"] for row in rows if row["shards"] == 1}
    for row in rows:
        base = single.get(row["events_per_commit"])
        row["x_one_shard"] = row["events_per_s"] / base if base else None
    if as_json:
        print(orjson.dumps({"journal": "PostgreSQL, one server per shard", "runs": rows}).decode())
        return 0
    print(
        "callboard journal: append + done mark + receipt per event "
        f"(PostgreSQL, one server per shard, all on this machine: {os.cpu_count()} cores)"
    )
    print(
        f"{'events/commit':>14}{'shards':>7}{'events':>9}{'commits':>9}{'bench CPU µs/ev':>16}"
        f"{'server CPU µs/ev':>17}{'WAL B/ev':>9}{'disk B/ev':>10}{'events/s':>10}{'x 1 shard':>10}"
    )
    for row in rows:
        ratio = f"{row['x_one_shard']:.2f}" if row["x_one_shard"] is not None else "-"
        print(
            f"{row['events_per_commit']:>14}{row['shards']:>7}{row['events']:>9,}{row['commits']:>9,}"
            f"{row['cpu_us_per_event']:>16.1f}{row['server_cpu_us_per_event']:>17.1f}"
            f"{row['wal_bytes_per_event']:>9,.0f}{row['stored_bytes_per_event']:>10,.0f}"
            f"{row['events_per_s']:>10,.0f}{ratio:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
