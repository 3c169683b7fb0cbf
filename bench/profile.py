"""Where the engine's CPU goes per handled event, under the e2e load.

The engine runs as its own process (the same fleet as ``bench e2e``: web
adapter over real websockets, durable journal, echo pipeline); py-spy samples
it, native frames included (so the cyclic GC and SQLite show up), while the
e2e load drives ``sessions x messages`` events. The samples are sorted into
categories by their frames, and each category's share is turned into µs per
event using the process's measured CPU time (every thread); samples blocked in
a syscall (fsync) count as active, so the fsync thread's figures are wall time
rather than CPU. Threads waiting for the GIL or a lock are left out. Needs py-spy
(``pip install 'callboard[bench]'``) and permission to ptrace the engine.

    callboard bench profile [--sessions 1000] [--messages 40] [--rate N] [--out DIR]

``--rate`` paces the load (events/s, as ``bench e2e``'s "paced 5000/s"): fewer events
share each commit and socket write, so per-batch costs show up.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from callboard.bench.e2e import FLEET, Load, drive
from callboard.bench.harness import cpu_seconds, engine_argv, free_port, pin, process, split_cpus, wait_ready
from callboard.engine.loop import run as run_loop

#: (category, substrings of a frame name): a sample counts for the category of its innermost
#: frame that names one (frames such as the interpreter's own name none)
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cyclic GC", ("gc_collect", "collect_with_callback", "deduce_unreachable", "move_unreachable")),
    ("journal SQL (SQLite)", ("sqlite3", "pysqlite")),
    ("fsync", ("fsync", "fdatasync")),
    ("asyncio.timeout", ("asyncio/timeouts.py",)),
    ("pydantic", ("pydantic",)),
    ("msgspec", ("msgspec",)),
    ("websocket / aiohttp / socket writes", ("aiohttp", "uvloop", "sock_send", "writev", "sendmsg")),
    ("journal (Python: batching, futures)", ("engine/journal",)),
    ("web adapter", ("adapters/web",)),
    ("session / router / outbound / bot actors", ("callboard/actors/",)),
    ("actor runtime (cells, dispatcher)", ("callboard/engine/",)),
    ("handlers (pipeline)", ("callboard/handlers/",)),
    ("asyncio (loop, futures, queues)", ("asyncio/",)),
)


#: frames of a thread that waits (for the GIL, a lock, the event loop's poll) and uses no
#: CPU, which py-spy's native sampling may still count as running
_WAITS = ("take_gil", "pthread_cond_timedwait", "PyThread_acquire_lock_timed", "epoll_wait")


def categorise(stacks: Path) -> tuple[collections.Counter[str], int]:
    """Samples per category from py-spy's ``raw`` (collapsed) output."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if any(wait in frame for frame in frames for wait in _WAITS):
            continue
        thread = frames[0].rpartition(": ")[2]
        checkpoint = any("WalCheckpoint" in frame for frame in frames)  # its fsyncs included
        category = (
            "WAL checkpoints"
            if checkpoint
            else next(
                (
                    name
                    for frame in reversed(frames)  # innermost first: the work, not the loop around it
                    for name, keys in CATEGORIES
                    if any(k in frame for k in keys)
                ),
                "other",
            )
        )
        counts[f"{thread}: {category}"] += int(count)
        total += int(count)
    return counts, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard bench profile", description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=40, help="per session")
    parser.add_argument("--rate", type=float, default=None, help="events/s (default: as fast as acks allow)")
    parser.add_argument("--out", type=Path, default=None, help="keep py-spy's stacks here")
    args = parser.parse_args(argv)
    spy_binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy_binary).exists():
        print("py-spy is not installed: pip install 'callboard[bench]'", file=sys.stderr)
        return 2
    engine_cpu, load_cpu = split_cpus()
    pin(load_cpu)
    with tempfile.TemporaryDirectory(prefix="callboard-profile-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        stacks = out / "stacks.txt"
        port = free_port()
        config = Path(tmp) / "fleet.yaml"
        config.write_text(FLEET.format(journal=Path(tmp) / "journal.sqlite3", port=port, window="0s"))
        with process(engine_argv(config), engine_cpu) as engine:
            run_loop(wait_ready(f"http://127.0.0.1:{port}/readyz", engine))
            url = f"ws://127.0.0.1:{port}/web/bench/ws"
            run_loop(drive(url, Load(sessions=args.sessions, messages=2, connections=50), 0.0, tag="warm-"))
            record = ["record", "-p", str(engine.pid), "--native", "--threads", "-r", "250", "-d", "3600"]
            spy = subprocess.Popen(
                [spy_binary, *record, "-f", "raw", "-o", str(stacks)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(1.0)  # py-spy attaches
            before = cpu_seconds(engine.pid)
            load = Load(sessions=args.sessions, messages=args.messages, connections=50, rate=args.rate)
            result = run_loop(drive(url, load, 0.0, tag="p-"))
            used = cpu_seconds(engine.pid) - before
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=120)
        if not stacks.exists():
            print(f"py-spy wrote nothing: {err.decode(errors='replace').strip()}", file=sys.stderr)
            return 1
        counts, total = categorise(stacks)
    per_event = used / max(1, result.events) * 1e6
    print(
        f"{result.events:,} events at {result.handled_per_s:,.0f}/s; engine CPU {per_event:.0f} µs/event "
        f"(all threads); {total:,} samples"
    )
    for name, count in counts.most_common():
        print(f"  {name:<58}{100 * count / total:6.1f}%{per_event * count / total:9.1f} µs/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
