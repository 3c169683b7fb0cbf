"""The sandbox's admin API (behind the admin token like the rest of ``/api``):

- ``GET /api/sandbox``: backend and engine state, limits, the quota persistent workspaces get,
  each tenant's sessions, CPU-seconds and disk against its budgets, every live sandbox session
  (scope key, container, calls in flight, idle time and when the idle TTL reaps it, its managed
  processes) and the last 50 errors;
- ``GET /api/sandbox/audit``: the audit log, newest first; filters ``bot``, ``tool``,
  ``scope``, ``since``/``until`` (Unix seconds), ``limit``; ``format=jsonl`` exports it as
  JSON lines (one row a line, as a download).

A session busy with a long command cannot answer for its processes at once; it is listed with
``"busy": true`` rather than holding the page up.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from callboard.actors.http import HttpServer
from callboard.actors.sandbox import sandbox_status
from callboard.actors.sandbox_session import ReportRequest, SessionReport
from callboard.engine.audit import AuditQuery, read_audit
from callboard.engine.journal_store import JournalStore
from callboard.engine.ref import ActorRef

#: how long the status page waits for one session's report
REPORT_TIMEOUT = 1.0
#: rows one export returns at most
EXPORT_LIMIT = 100_000


async def sandbox_report(manager: ActorRef | None) -> dict[str, Any]:
    """The status page as one JSON-ready dict."""
    if manager is None:
        return {
            "state": "off",
            "reason": "the fleet has no sandbox configuration",
            "sessions": [],
            "errors": [],
        }
    status = await sandbox_status(manager)
    reports = await asyncio.gather(*(_report(entry.ref) for entry in status.live))
    sessions = []
    for entry, report in zip(status.live, reports, strict=True):
        processes = [info.model_dump() for info in report.processes] if report is not None else []
        running = any(p["state"] in ("starting", "running", "stopping") for p in processes)
        idle = entry.in_flight == 0 and not running and report is not None
        sessions.append(
            {
                "scope": entry.key,
                "session": entry.session,
                "container": report.container_id[:12] if report and report.container_id else None,
                "busy": report is None,
                "in_flight": entry.in_flight,
                "idle_for": round(entry.idle_for, 3),
                "reaped_in": round(max(0.0, status.idle_ttl - entry.idle_for), 3) if idle else None,
                "processes": processes,
            }
        )
    return {
        "fleet": status.fleet,
        "state": status.state,
        "reason": status.reason,
        "backend": status.engine,
        "max_sessions": status.max_sessions,
        "idle_ttl": status.idle_ttl,
        "stopping": status.stopping,
        "calls": status.calls,
        "orphans_removed": status.orphans_removed,
        "sweeps": status.sweeps,
        "last_sweep_error": status.last_sweep_error,
        "workspaces": asdict(status.workspaces) if status.workspaces is not None else None,
        "tenants": {
            usage.tenant: {
                "sessions": status.tenant_sessions.get(usage.tenant, 0),
                "max_sessions": status.tenant_max_sessions.get(usage.tenant),
                "cpu_seconds": usage.cpu_seconds,
                "max_cpu_seconds": usage.max_cpu_seconds,
                "cpu_window": status.tenant_cpu_window,
                "disk": usage.disk,
                "max_disk": usage.max_disk,
                "refused": usage.refused,
            }
            for usage in status.tenants
        },
        "sessions": sessions,
        "errors": [asdict(error) for error in status.errors],
    }


async def _report(ref: ActorRef) -> SessionReport | None:
    try:
        report: SessionReport = await ref.ask(ReportRequest(), timeout=REPORT_TIMEOUT)
    except Exception:  # busy with a command, or stopping: say so instead of waiting
        return None
    return report


def audit_query(query: Any, export: bool) -> AuditQuery:
    """Filters from a request's query string; ``ValueError`` names the bad one."""

    def number(name: str) -> float | None:
        raw = query.get(name)
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number (Unix seconds)") from None

    raw_limit = query.get("limit")
    try:
        limit = int(raw_limit) if raw_limit is not None else (EXPORT_LIMIT if export else 100)
    except ValueError:
        raise ValueError("limit must be an integer") from None
    if not 1 <= limit <= EXPORT_LIMIT:
        raise ValueError(f"limit must be between 1 and {EXPORT_LIMIT}")
    return AuditQuery(
        bot=query.get("bot"),
        tool=query.get("tool"),
        scope=query.get("scope"),
        since=number("since"),
        until=number("until"),
        limit=limit,
    )


def add_sandbox_routes(http: HttpServer, manager: ActorRef | None, journal: JournalStore) -> None:
    async def status(request: web.Request) -> web.StreamResponse:
        return web.json_response(await sandbox_report(manager))

    async def audit(request: web.Request) -> web.StreamResponse:
        export = request.query.get("format") == "jsonl"
        try:
            query = audit_query(request.query, export)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        rows = await read_audit(journal, query)
        if export:
            body = b"".join(orjson.dumps(row.as_dict()) + b"\n" for row in rows)
            return web.Response(
                body=body,
                content_type="application/x-ndjson",
                headers={"Content-Disposition": 'attachment; filename="sandbox-audit.jsonl"'},
            )
        return web.json_response({"rows": [row.as_dict() for row in rows]})

    http.add("GET", "/api/sandbox", status)
    http.add("GET", "/api/sandbox/audit", audit)
