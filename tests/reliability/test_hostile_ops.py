"""What an unlucky operator does to a running engine: a corrupt or unwritable
journal at start, hostile fleet files on SIGHUP, SIGTERM under load with idle
websockets open. Each runs the real ``callboard run`` process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from callboard.bench.harness import free_port, wait_ready
from tests.support import ChatClient

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]

FLEET = """
name: ops
engine:
  journal: {journal}
  admin: {{port: {port}}}
  shutdown_timeout: {timeout}
bots:
  - id: demo
    adapter: {{type: web}}
    session:
      debounce: {{window: 0}}
    handlers:
      - event_type: message.received
        handler_type: pipeline
        handler_config: {{stages: [{{type: echo}}]}}
"""


def engine(config: Path, stderr: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "callboard.cli", "--log-level", "INFO", "run", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def write_fleet(tmp_path: Path, journal: Path, port: int, timeout: str = "10s") -> Path:
    config = tmp_path / "fleet.yaml"
    config.write_text(FLEET.format(journal=journal, port=port, timeout=timeout))
    return config


# ---------------------------------------------------------------------- journals


def _journal_with_events(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, payload BLOB)")
    conn.executemany("INSERT INTO events(payload) VALUES (?)", [(os.urandom(2000),) for _ in range(500)])
    conn.commit()
    conn.close()


def _truncated(path: Path) -> None:
    _journal_with_events(path)
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.truncate(size // 3)


def _scrambled(path: Path) -> None:
    _journal_with_events(path)
    with open(path, "r+b") as file:
        file.seek(100)
        file.write(os.urandom(8192))


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is a text file, not a journal\n" * 100)


def _under_a_file(path: Path) -> None:
    path.parent.write_text("a file where a directory should be")


@pytest.mark.parametrize(
    ("make", "journal_name", "expected"),
    [
        (_not_sqlite, "j.sqlite3", "not a usable SQLite database"),
        (_truncated, "j.sqlite3", "not a usable SQLite database"),
        (_scrambled, "j.sqlite3", "not a usable SQLite database"),
        (_under_a_file, "blocker/j.sqlite3", "cannot open or create it"),
    ],
)
def test_bad_journal_is_one_clear_line(
    tmp_path: Path, make: object, journal_name: str, expected: str
) -> None:
    journal = tmp_path / journal_name
    make(journal)  # type: ignore[operator]
    config = write_fleet(tmp_path, journal, free_port())
    proc = engine(config)
    _, err = proc.communicate(timeout=60)
    text = err.decode()
    assert proc.returncode != 0
    assert "Traceback" not in text, text[-3000:]
    assert expected in text, text[-2000:]
    assert "move it aside" in text or "writable" in text


def test_read_only_journal_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only tmpfs (root ignores file modes)")
    where = tmp_path / "ro"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        config = write_fleet(tmp_path, where / "j.sqlite3", free_port())
        proc = engine(config)
        _, err = proc.communicate(timeout=60)
        text = err.decode()
        assert proc.returncode != 0
        assert "Traceback" not in text, text[-3000:]
        assert "cannot open or create it" in text, text[-2000:]
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# ---------------------------------------------------------------------- SIGHUP


@contextlib.asynccontextmanager
async def running_engine(
    tmp_path: Path, timeout: str = "10s"
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    config = write_fleet(tmp_path, tmp_path / "j.sqlite3", port, timeout)
    log = open(tmp_path / "engine.log", "wb")  # noqa: SIM115
    proc = engine(config, stderr=log.fileno())
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(f"{base}/readyz", proc, timeout=60)
        yield proc, base, config
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


async def status(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


HOSTILE = {
    "empty": "",
    "no bots": "name: ops\nbots: []\n",
    "invalid yaml": "bots: [\n  - id: {\n",
    "alias bomb": "a: &a ["
    + ",".join(['"lol"'] * 9)
    + "]\n"
    + "".join(
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ),
    "huge": "x:\n" + "".join(f"  - {i}\n" for i in range(200_000)),
    "binary": "\udcff",
}


async def test_sighup_with_hostile_files_keeps_the_fleet(tmp_path: Path) -> None:
    async with running_engine(tmp_path) as (proc, base, config):
        good = config.read_text()
        for name, text in HOSTILE.items():
            if name == "binary":
                config.write_bytes(b"name: \xff\xfe\n")
            else:
                config.write_text(text)
            proc.send_signal(signal.SIGHUP)
            worst = 0.0
            for _ in range(20):  # the loop stays responsive while the file is parsed
                started = time.monotonic()
                assert await status(f"{base}/healthz") == 200
                worst = max(worst, time.monotonic() - started)
                await asyncio.sleep(0.05)
            assert worst < 1.0, f"{name}: /healthz took {worst:.2f}s during the reload"
            assert await status(f"{base}/web/demo/") == 200, f"{name}: the bot was removed"
            assert await status(f"{base}/readyz") == 200, name
        config.write_text(
            good.replace("bots:", "allow_no_bots: true\nbots: []\nold_bots:", 1).split("old_bots:")[0]
        )
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if await status(f"{base}/web/demo/") == 404:
                break
            await asyncio.sleep(0.05)
        assert await status(f"{base}/web/demo/") == 404, "an explicit, flagged bots: [] is applied"
    log = (tmp_path / "engine.log").read_text(errors="replace")
    assert log.count("refused, keeping the running fleet") >= len(HOSTILE), log[-3000:]
    assert "Traceback" not in log, log[-3000:]


# ---------------------------------------------------------------------- SIGTERM


async def test_sigterm_under_load_with_idle_websockets_obeys_the_timeout(tmp_path: Path) -> None:
    timeout = 4.0
    async with running_engine(tmp_path, timeout=f"{timeout:g}s") as (proc, base, _):
        idle = [await ChatClient.connect(base) for _ in range(20)]
        busy = await ChatClient.connect(base)
        stop = asyncio.Event()

        async def flood() -> None:
            i = 0
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    await busy.say(f"m{i}", chat_id=f"c{i % 50}")
                i += 1
                if i % 50 == 0:
                    await asyncio.sleep(0)

        flooding = asyncio.ensure_future(flood())
        await busy.wait_count("ack", 50, timeout=30)  # (the rate limit answers the rest 'busy')
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 60)
        took = time.monotonic() - started
        stop.set()
        await asyncio.gather(flooding, return_exceptions=True)
        closes = [client.ws.close_code for client in idle]
        for client in [*idle, busy]:
            await client.close()
    print(f"\nSIGTERM under load: exit {code} after {took:.2f}s, timeout {timeout:g}s, closes {set(closes)}")
    assert code == 0
    assert took < timeout + 2.0, f"took {took:.1f}s against a {timeout:g}s shutdown_timeout"
    assert all(c == 1001 for c in closes), closes
