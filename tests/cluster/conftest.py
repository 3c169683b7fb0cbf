"""Cluster tests start their own PostgreSQL and NATS JetStream (Debian's
packages, installed when missing), on 127.0.0.1, and stop them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callboard.testing.nats_server import NatsServer, NatsUnavailable
from callboard.testing.postgres import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable, cluster tests did NOT run: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_server() -> Iterator[NatsServer]:
    try:
        server = NatsServer()
        server.start()
    except NatsUnavailable as exc:
        pytest.skip(f"nats-server unavailable, cluster tests did NOT run: {exc}")
    try:
        yield server
    finally:
        server.stop()
