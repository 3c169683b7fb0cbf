"""Cluster mode: connections that must exist once per fleet, each under a lease.

A bot whose adapter says ``singleton_connection()`` (Telegram long polling, Slack
Socket Mode, Lark's long connection: the platform serves one consumer) claims
the key ``conn.<bot>.<adapter>`` in the cluster's lease bucket. The node that
creates the key owns the connection and runs it; the others stand by and try
again every balance round. The rules are the partitions' (actors/cluster.py):
the creating revision is the epoch, renewals are compare-and-set on the last
revision, and the lease is valid locally until the last successful renewal's
send time + ``ttl x 0.75``; past that (NATS unreachable) the owner stops its
connection before the server lets another node create the key.

Overlap is harmless to correctness, only wasteful: what a connection receives
is committed to the shared journal with the platform's dedup key, so an event
read by two nodes (the old owner's last batch, not yet confirmed to the
platform, read again by the new owner) is stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError

from callboard.engine.clock import Clock

log = logging.getLogger("callboard.cluster")

#: balance rounds a node that runs its share of connections leaves a free one to others
PASS_ROUNDS = 2


def connection_key(bot: str, adapter: str) -> str:
    return f"conn.{bot}.{adapter}"


@dataclass
class Claim:
    """One bot's connection as this node sees it."""

    bot: str
    key: str
    #: told True when this node takes the lease (start the connection), False when it
    #: loses it (stop the connection at once)
    on_change: Callable[[bool], None]
    epoch: int = 0  # the KV revision that created the lease; 0 while not held here
    revision: int = 0
    valid_until: float = 0.0
    #: the holder last read from the bucket (this node's name while held here)
    owner: str | None = None
    acquired_at: float | None = None
    #: balance rounds this node saw the lease free and left it to a node with fewer
    passed: int = 0


@dataclass
class ConnectionCounters:
    acquired: int = 0
    #: acquisitions of a lease last seen held by another node (a failover)
    takeovers: int = 0
    lost: int = 0
    released: int = 0


class ConnectionLeases:
    """The connection leases of one node; driven by the node's membership rounds."""

    def __init__(self, node: str, ttl: float, clock: Clock, valid_from: Callable[[float], float]) -> None:
        self.node = node
        self.ttl = ttl
        self.clock = clock
        self._valid_from = valid_from
        self.claims: dict[str, Claim] = {}
        self.counters = ConnectionCounters()
        self._releases: set[asyncio.Task[None]] = set()

    def held(self, claim: Claim) -> bool:
        return claim.epoch != 0 and self.clock.now() < claim.valid_until

    def claim(self, bot: str, adapter: str, on_change: Callable[[bool], None]) -> None:
        self.claims[bot] = Claim(bot, connection_key(bot, adapter), on_change)

    def unclaim(self, bot: str, kv: Any) -> None:
        """The bot stopped here (its connection with it): hand the lease on now."""
        claim = self.claims.pop(bot, None)
        if claim is None or claim.epoch == 0 or kv is None:
            return
        task = asyncio.get_running_loop().create_task(self._delete(kv, claim))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _delete(self, kv: Any, claim: Claim) -> None:
        self.counters.released += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(kv.delete(claim.key, last=claim.revision), self.ttl / 3)
        log.info("cluster %s: released connection %s (epoch %d)", self.node, claim.key, claim.epoch)

    async def release_all(self, kv: Any) -> None:
        """Clean stop: every lease held here is deleted, so a survivor takes it at once."""
        for bot, claim in list(self.claims.items()):
            if claim.epoch != 0:
                claim.on_change(False)
            self.unclaim(bot, kv)
        await asyncio.gather(*self._releases, return_exceptions=True)

    async def renew(self, kv: Any) -> None:
        async def one(claim: Claim) -> None:
            sent = self.clock.now()
            try:
                revision = await asyncio.wait_for(
                    kv.update(claim.key, self.node.encode(), last=claim.revision), self.ttl / 3
                )
            except KeyWrongLastSequenceError:
                self._lost(claim, "taken by another node")
                return
            except Exception as exc:  # unreachable: the lease runs out locally first
                log.warning("cluster %s: connection lease %s not renewed: %r", self.node, claim.key, exc)
                return
            if claim.epoch != 0:
                claim.revision = revision
                claim.valid_until = self._valid_from(sent)

        await asyncio.gather(*(one(c) for c in list(self.claims.values()) if c.epoch != 0))

    def expire(self) -> None:
        now = self.clock.now()
        for claim in list(self.claims.values()):
            if claim.epoch != 0 and now >= claim.valid_until:
                self._lost(claim, "not renewed in time (fenced)")

    def _lost(self, claim: Claim, why: str) -> None:
        if claim.epoch == 0 or self.claims.get(claim.bot) is not claim:
            return
        epoch = claim.epoch
        claim.epoch = claim.revision = 0
        claim.owner = None
        claim.acquired_at = None
        self.counters.lost += 1
        log.warning(
            "cluster %s: lost connection %s (epoch %d): %s; stopping it", self.node, claim.key, epoch, why
        )
        claim.on_change(False)

    async def balance(self, kv: Any, keys: set[str], nodes: int) -> None:
        """Take each claimed connection whose lease is free; note who holds the others.
        A node already running its share (connections / live nodes) leaves a free one to
        the others for ``PASS_ROUNDS`` rounds first, so connections spread over the nodes."""
        share = math.ceil(len(self.claims) / max(1, nodes))
        for claim in list(self.claims.values()):
            if claim.epoch != 0:
                continue
            if claim.key in keys:
                claim.passed = 0
                with contextlib.suppress(Exception):
                    entry = await asyncio.wait_for(kv.get(claim.key), self.ttl / 3)
                    claim.owner = bytes(entry.value or b"").decode() or None
                continue
            held = sum(1 for c in self.claims.values() if c.epoch != 0)
            if held >= share and claim.passed < PASS_ROUNDS:
                claim.passed += 1
                continue
            claim.passed = 0
            sent = self.clock.now()
            try:
                epoch = await asyncio.wait_for(kv.create(claim.key, self.node.encode()), self.ttl / 3)
            except KeyWrongLastSequenceError:
                continue  # another node was quicker
            if self.claims.get(claim.bot) is not claim:  # unclaimed meanwhile: hand it back
                with contextlib.suppress(Exception):
                    await kv.delete(claim.key, last=epoch)
                continue
            previous = claim.owner
            claim.epoch = claim.revision = epoch
            claim.valid_until = self._valid_from(sent)
            claim.owner = self.node
            claim.acquired_at = self.clock.now()
            self.counters.acquired += 1
            if previous is not None and previous != self.node:
                self.counters.takeovers += 1
            log.info(
                "cluster %s: took connection %s (epoch %d%s); starting it",
                self.node,
                claim.key,
                epoch,
                f", from {previous}" if previous and previous != self.node else "",
            )
            claim.on_change(True)

    def snapshot(self) -> dict[str, Any]:
        return {
            claim.key: {
                "owner": self.node if self.held(claim) else claim.owner,
                "here": self.held(claim),
                "epoch": claim.epoch if self.held(claim) else None,
            }
            for claim in sorted(self.claims.values(), key=lambda c: c.key)
        }
