"""Failed runs and async webhook callbacks on the admin server.

- ``GET /api/bots/{id}/failed``: runs whose handler failed for good (status
  ``failed``: a webhook that exhausted its retries, an agent whose model stayed
  down) or finished with errors (``errors``: a webhook's bad actions), newest
  first: run id, rule, status, session, error, time, event sequence numbers.
  Kept in the journal (receipt ``failed:bot:run:rule``) for its retention.
- ``POST /api/bots/{id}/failed/{run}/{rule}/retry``: run those events again
  through that rule alone, as the same run: sends already made are skipped
  (receipts) and a webhook keeps its Idempotency-Key. The record then reads
  ``retried``, or ``failed`` again with the new error. ``callboard retry`` calls it.
- ``POST /api/webhooks/{bot}.{run}.{rule}``: an async webhook receiver's
  answer (``{"actions": [...]}``), signed like our deliveries with the rule's
  secret; the actions run in the delivery's session.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from callboard.actors.http import HttpServer
from callboard.actors.messages import Callback, Inbound, RetryRun
from callboard.actors.runtime import BotRuntime, FleetStats
from callboard.engine.events import Event, decode_event
from callboard.engine.journal_store import JournalStore
from callboard.handlers.webhook.handler import CALLBACK_PREFIX, WebhookHandler
from callboard.handlers.webhook.signature import HEADER, verify

BOTS_PREFIX = "/api/bots/"
MAX_CALLBACK_BYTES = 1 << 20


def add_run_routes(http: HttpServer, stats: FleetStats, journal: JournalStore) -> None:
    runs = _Runs(stats, journal)
    http.add_prefix("GET", BOTS_PREFIX, runs.get)
    http.add_prefix("POST", BOTS_PREFIX, runs.post)
    http.add_prefix("POST", CALLBACK_PREFIX, runs.callback, open_=True)  # signed by the receiver


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


class _Runs:
    def __init__(self, stats: FleetStats, journal: JournalStore) -> None:
        self.stats = stats
        self.journal = journal

    def _bot(self, bot_id: str) -> BotRuntime | None:
        return self.stats.runtimes.get(bot_id)

    async def get(self, request: web.Request) -> web.StreamResponse:
        parts = request.path[len(BOTS_PREFIX) :].strip("/").split("/")
        if len(parts) != 2 or parts[1] != "failed":
            return _error(404, f"no route for {request.path}")
        bot_id = parts[0]
        if self._bot(bot_id) is None:
            return _error(404, f"no running bot {bot_id!r}")
        return web.json_response(await self.failed(bot_id))

    async def failed(self, bot_id: str) -> list[dict[str, Any]]:
        prefix = f"failed:{bot_id}:"
        rows = await self.journal.query(
            "SELECT key, run_id, chat, status, error, at FROM receipts WHERE bot=? AND substr(key, 1, ?)=? "
            "AND status IN ('failed', 'errors') ORDER BY at DESC LIMIT 500",
            (bot_id, len(prefix), prefix),
        )
        rows = sorted(rows, key=lambda row: row[5], reverse=True)[:500]  # a sharded journal: each shard's
        out = []
        for key, run_id, chat, status, error, at in rows:
            out.append(
                {
                    "run_id": run_id,
                    "rule": int(key.rsplit(":", 1)[1]),
                    "status": status,
                    "session": chat,
                    "error": error,
                    "at": at,
                    "events": await self._seqs(run_id),
                }
            )
        return out

    async def _seqs(self, run_id: int) -> list[int]:
        rows = await self.journal.query("SELECT seq FROM run_members WHERE run_id=? ORDER BY seq", (run_id,))
        return [int(r[0]) for r in rows] or [run_id]

    async def _events(self, run_id: int) -> list[tuple[int, Event]]:
        seqs = await self._seqs(run_id)
        marks = ",".join("?" * len(seqs))
        rows = await self.journal.query(
            f"SELECT seq, payload FROM events WHERE seq IN ({marks}) ORDER BY seq", seqs
        )
        return [(int(seq), decode_event(payload)) for seq, payload in rows]

    async def post(self, request: web.Request) -> web.StreamResponse:
        parts = request.path[len(BOTS_PREFIX) :].strip("/").split("/")
        if len(parts) != 5 or parts[1] != "failed" or parts[4] != "retry":
            return _error(404, f"no route for {request.path}")
        bot_id = parts[0]
        try:
            run_id, rule = int(parts[2]), int(parts[3])
        except ValueError:
            return _error(400, "run id and rule must be numbers")
        bot = self._bot(bot_id)
        if bot is None or bot.sessions is None:
            return _error(404, f"no running bot {bot_id!r}")
        key = f"failed:{bot_id}:{run_id}:{rule}"
        receipt = await self.journal.receipt(key)
        if receipt is None or receipt.status != "failed":
            return _error(404, f"run {run_id} rule {rule} is not a failed run of bot {bot_id!r}")
        if bot.routes.at(rule) is None:
            return _error(409, f"bot {bot_id!r} has no rule {rule} any more (the fleet file changed)")
        events = await self._events(run_id)
        if not events:
            return _error(410, f"the events of run {run_id} are past the journal's retention")
        clock = bot.clock.now()
        inbounds = [Inbound(seq, event, event.session_key(), clock, replayed=True) for seq, event in events]
        bot.sessions.tell(RetryRun(run_id, inbounds, rule))
        return web.json_response({"retrying": {"bot": bot_id, "run_id": run_id, "rule": rule}}, status=202)

    async def callback(self, request: web.Request) -> web.StreamResponse:
        delivery = request.path[len(CALLBACK_PREFIX) :].strip("/")
        try:
            bot_id, run_text, rule_text = delivery.rsplit(".", 2)
            run_id, rule = int(run_text), int(rule_text)
        except ValueError:
            return _error(404, "unknown delivery id")
        bot = self._bot(bot_id)
        handler = bot.routes.at(rule) if bot is not None else None
        if bot is None or bot.sessions is None or not isinstance(handler, WebhookHandler):
            return _error(404, "unknown delivery id")
        secret = handler.config.secret
        if handler.config.mode != "async" or secret is None:
            return _error(404, "unknown delivery id")
        body = await request.content.read(MAX_CALLBACK_BYTES + 1)
        if len(body) > MAX_CALLBACK_BYTES:
            return _error(413, f"a callback is limited to {MAX_CALLBACK_BYTES} bytes")
        problem = verify(secret.get_secret_value(), body, request.headers.get(HEADER))
        if problem is not None:
            return _error(401, problem)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "the body is not valid JSON")
        if not isinstance(data, dict) or not isinstance(data.get("actions"), list):
            return _error(400, 'the body must be {"actions": [...]}')
        events = [event for _, event in await self._events(run_id)]
        if not events:
            return _error(404, "unknown delivery id")
        key = events[-1].session_key()
        bot.sessions.tell(Callback(key, run_id, rule, events, data["actions"]))
        return web.json_response({"accepted": len(data["actions"])}, status=202)
