"""The scale-out configuration: the PostgreSQL URL shorthand, its secrecy, and
cluster mode refusing a journal the nodes cannot share."""

from __future__ import annotations

import pytest

from callboard.actors.config_file import ConfigError, parse_fleet


def test_a_postgresql_url_selects_the_postgres_journal_and_stays_secret() -> None:
    config = parse_fleet("engine: {journal: 'postgresql://cb:hunter2secret@db/cb'}")
    journal = config.engine.journal
    assert journal.url is not None and journal.url.get_secret_value() == "postgresql://cb:hunter2secret@db/cb"
    assert journal.path == "var/callboard.sqlite3"  # per-fleet secrets still live next to it
    assert "hunter2secret" not in repr(config)


def test_a_path_stays_sqlite() -> None:
    assert parse_fleet("engine: {journal: var/x.sqlite3}").engine.journal.url is None


def test_cluster_needs_a_shared_journal_and_errors_name_the_key_not_the_value() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_fleet("engine: {cluster: {nats: 'nats://u:natspass@n:4222', node: a}}")
    assert "engine" in str(raised.value) and "postgresql" in str(raised.value)
    assert "natspass" not in str(raised.value)


def test_cluster_settings() -> None:
    config = parse_fleet(
        "engine: {journal: 'postgresql://db/cb', "
        "cluster: {nats: 'nats://n:4222', node: node-1, partitions: 32}}"
    )
    cluster = config.engine.cluster
    assert cluster is not None and cluster.partitions == 32 and cluster.lease == 3.0
    with pytest.raises(ConfigError, match=r"engine\.cluster\.node"):
        parse_fleet("engine: {journal: 'postgresql://db/cb', cluster: {nats: 'nats://n', node: 'a b'}}")
    with pytest.raises(ConfigError, match=r"engine\.journal\.url"):
        parse_fleet("engine: {journal: {url: 'mysql://x'}}")
