"""kill -9 mid-burst with the PostgreSQL journal, one database or sharded over
two: after a restart every acknowledged message gets its reply, and none gets
two (the scenario of test_kill_9.py, on a PostgreSQL server this test starts
and stops)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callboard.testing.postgres import PostgresServer, PostgresUnavailable
from tests.reliability.test_kill_9 import kill_9_mid_burst

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable, the PostgreSQL kill -9 test did NOT run: {exc}")
    try:
        yield server
    finally:
        server.stop()


async def test_kill_9_mid_burst_on_postgres(tmp_path: Path, postgres: PostgresServer) -> None:
    await kill_9_mid_burst(tmp_path, "200ms", postgres.create_database("crash"))


async def test_kill_9_mid_burst_on_two_shards(tmp_path: Path, postgres: PostgresServer) -> None:
    """The twenty chats spread over both shards; replay merges them."""
    await kill_9_mid_burst(tmp_path, "200ms", [postgres.create_database("shard") for _ in range(2)])
