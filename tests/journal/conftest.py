"""The journal suite runs on every backend: ``make_journal`` builds a SQLite
journal in the test's directory, a PostgreSQL one on a fresh database of a
server this session starts (Debian's ``postgresql``, initdb into a temp dir,
127.0.0.1 only, unprivileged user), stopped at the end, or a journal sharded
over two fresh databases of that server."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callboard.engine.journal import Journal
from callboard.engine.journal_store import JournalStore
from callboard.testing.postgres import PostgresServer, PostgresUnavailable

MakeJournal = Callable[..., JournalStore]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        warnings.warn(f"PostgreSQL journal tests SKIPPED: {exc}", stacklevel=1)
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server
    finally:
        server.stop()


#: shards of the "sharded" backend
SHARDS = 2


@pytest.fixture(params=["sqlite", "postgresql", "sharded"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def journal_target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Where journal ``name`` lives: a file path, a database URL, or the shards' URLs
    separated by spaces (the same for the same name)."""
    urls: dict[str, str] = {}

    def target(name: str) -> str:
        if backend == "sqlite":
            return str(tmp_path / f"{name}.sqlite3")
        if name not in urls:
            server: PostgresServer = request.getfixturevalue("postgres")
            shards = SHARDS if backend == "sharded" else 1
            urls[name] = " ".join(server.create_database() for _ in range(shards))
        return urls[name]

    return target


@pytest.fixture
def make_journal(journal_target: Callable[[str], str], tmp_path: Path) -> MakeJournal:
    def make(name: str = "j", **kwargs: Any) -> JournalStore:
        where = journal_target(name)
        path = str(tmp_path / f"{name}.sqlite3")
        if " " in where:
            from callboard.engine.journal_sharded import ShardedJournal

            return ShardedJournal(where.split(), path=path, **kwargs)
        if where.startswith("postgresql://"):
            from callboard.engine.journal_pg import PgJournal

            return PgJournal(where, path=path, **kwargs)
        return Journal(where, **kwargs)

    return make
