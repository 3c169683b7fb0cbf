"""The journal's CPU per event at a given number of events per commit.

Each event goes through what the hot path asks of the journal: an append with
its dedup key (one commit, awaited: the ack waits for it), then its done mark
and a reply receipt (the next commit, in the background). ``--batch`` events
are appended in one loop turn, so they share one transaction and one fsync,
as a busy connection's events do. CPU is the process's (the loop thread and
the fsync thread); the real disk is used (synchronous=FULL), so the events/s
column is the disk's as much as the journal's.

    callboard bench journal [--batch 1 40 200] [--events N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from callboard.engine.entities import ChatType, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.journal import Journal
from callboard.engine.loop import run as run_loop

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


async def measure(batch: int, total: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="callboard-bench-journal-") as tmp:
        journal = Journal(str(Path(tmp) / "journal.sqlite3"))
        await journal.open()
        try:
            events = [event(n) for n in range(total)]
            commits = journal.commits
            cpu, wall = time.process_time(), time.perf_counter()
            for start in range(0, total, batch):
                chunk = events[start : start + batch]
                seqs = await asyncio.gather(*(journal.append(e, e.session_key()) for e in chunk))
                done = [s for s in seqs if s is not None]
                journal.mark_done(done)
                for seq, e in zip(done, chunk, strict=False):
                    journal.store_receipt(f"reply:{seq}", "bench", seq, e.session_key().name, f"b{seq}")
            await journal.flush()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            commits = journal.commits - commits
        finally:
            await journal.close()
    return {
        "events_per_commit": batch,
        "events": total,
        "commits": commits,
        "cpu_us_per_event": cpu / total * 1e6,
        "events_per_s": total / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench journal", description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 40, 200], help="events per commit")
    parser.add_argument(
        "--events", type=int, default=None, help="per batch size (default: 2,000 x size, max 40,000)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    rows = [run_loop(measure(b, args.events or min(40_000, 2_000 * b))) for b in args.batch]
    if args.json:
        print(orjson.dumps({"journal": "SQLite WAL, synchronous=FULL", "runs": rows}).decode())
        return 0
    print("callboard journal: append + done mark + receipt per event (SQLite WAL, synchronous=FULL)")
    print(f"{'events/commit':>14}{'events':>9}{'commits':>9}{'CPU µs/event':>14}{'events/s':>10}")
    for row in rows:
        print(
            f"{row['events_per_commit']:>14}{row['events']:>9,}{row['commits']:>9,}"
            f"{row['cpu_us_per_event']:>14.1f}{row['events_per_s']:>10,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
