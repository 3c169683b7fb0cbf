"""Tenant budgets: the CPU window and the refusals on a ManualClock, the manager charging what
its janitor meters, refusing the tenant's new calls (audited, other tenants untouched), and
reading the charges back from a real SQLite journal after a restart. The engine is the
in-memory backend of ``fakes.py`` with a CPU meter; real containers in ``test_quota_real.py``."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
from pydantic import ValidationError

from callboard.actors.sandbox import tools_for
from callboard.actors.sandbox_admin import sandbox_report
from callboard.actors.sandbox_manager import METER_INTERVAL, SandboxManager
from callboard.engine import ActorRef, ActorSystem, ManualClock
from callboard.engine.audit import AuditQuery, read_audit
from callboard.engine.journal import Journal
from callboard.engine.sandbox_api import ExecArgs, ExecResult, SandboxQuotaExceeded, SandboxTools
from callboard.sandbox import cli
from callboard.sandbox.backend import ExecRequest, Meter, SessionSpec
from callboard.sandbox.budgets import CPU_TOOL, TenantBudgets
from callboard.sandbox.config import SandboxPolicy, SandboxSettings
from tests.sandbox.fakes import FakeBackend, FakeEngine, FakeSession
from tests.sandbox.helpers import eventually

pytestmark = pytest.mark.timeout(60)

HOUR = 3600.0


def test_the_cpu_window_slides_and_says_when_it_frees() -> None:
    budgets = TenantBudgets({"acme": 10.0}, window=HOUR, max_disk={"acme": 1000})
    budgets.charge("acme", 4.0, at=100.0)
    budgets.charge("acme", 7.0, at=1000.0)
    budgets.charge("other", 50.0, at=1000.0)
    assert budgets.cpu_used("acme", 1000.0) == 11.0
    refused = budgets.refusal("acme", 1000.0)
    assert refused is not None and "over its CPU budget (sandbox.tenant_max_cpu_seconds)" in refused
    assert "11.0 of 10 CPU-seconds used in the last 1h" in refused
    assert budgets.cpu_frees_at("acme", 1000.0) == 100.0 + HOUR  # the 4 s charge leaves first
    assert "about 45m" in refused  # 100 + 3600 - 1000 = 2700 s
    assert budgets.refusal("other", 1000.0) is None  # no budget of its own
    assert budgets.refusal(None, 1000.0) is None
    assert budgets.refusal("acme", 100.0 + HOUR) is None  # 7 of 10 left in the window
    assert budgets.cpu_used("acme", 1000.0 + HOUR) == 0.0
    assert budgets.take_unsaved() == {"acme": 11.0, "other": 50.0} and budgets.take_unsaved() == {}
    budgets.charge("acme", 2.0, at=5000.0, saved=True)  # read back from the journal: not saved again
    assert budgets.take_unsaved() == {}

    budgets.disk = {"acme": 1001}
    refused = budgets.refusal("acme", 5000.0)
    assert refused is not None and "over its disk budget (sandbox.tenant_max_disk)" in refused
    assert "1001 of 1000 bytes" in refused
    (acme, other) = budgets.report(set(), 5000.0)
    assert (acme.tenant, acme.cpu_seconds, acme.disk, acme.refused) == ("acme", 2.0, 1001, refused)
    assert other.tenant == "other" and other.max_cpu_seconds is None


class BurnSession(FakeSession):
    """``burn SECONDS`` adds to the container's CPU time, as the engine's stats would show."""

    def exec(self, request: ExecRequest) -> ExecResult:
        if request.argv[:1] == ("burn",):
            usage = self.engine.cpu  # type: ignore[attr-defined]
            usage[self.spec.session] = usage.get(self.spec.session, 0.0) + float(request.argv[1])
        return super().exec(request)


class MeteredBackend(FakeBackend):
    def create_session(self, spec: SessionSpec) -> BurnSession:
        self.engine.check()
        self.engine.creates += 1
        self.engine.cpu[spec.session] = 0.0  # type: ignore[attr-defined]  # a new container starts at 0
        return BurnSession(self.engine, spec, self.engine.add(spec.fleet, spec.session, spec.instance))

    def meter(self, fleet: str, sessions: list[str], disk: bool) -> Meter:
        usage = self.engine.cpu  # type: ignore[attr-defined]
        return Meter({s: usage[s] for s in sessions if s in usage}, dict(self.engine.disk) if disk else None)  # type: ignore[attr-defined]


@pytest.fixture
def fake() -> FakeEngine:
    engine = FakeEngine()
    engine.cpu = {}  # type: ignore[attr-defined]
    engine.disk = {}  # type: ignore[attr-defined]
    return engine


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def journal(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Journal]:
    store = Journal(str(tmp_path / "j.sqlite3"), clock=clock)
    await store.open()
    yield store
    await store.close()


def chat(manager: ActorRef, tenant: str, chat_id: str = "1") -> SandboxTools:
    return tools_for(
        manager, SandboxPolicy(enabled=True, tenant=tenant), f"bot-{tenant}", "private", chat_id, "u"
    )


SETTINGS = SandboxSettings(
    tenant_max_cpu_seconds={"acme": 5.0}, tenant_cpu_window=HOUR, tenant_max_disk={"acme": "1m"}
)


async def test_a_tenant_over_its_cpu_budget_is_refused_until_the_window_frees_it(
    fake: FakeEngine, clock: ManualClock, journal: Journal
) -> None:
    system = ActorSystem("budgets", clock=clock)
    try:
        manager = system.spawn(
            SandboxManager, "sandbox", "fleet", SETTINGS, partial(MeteredBackend, fake), audit=journal
        )
        acme = chat(manager, "acme")
        await acme.exec(ExecArgs(argv=["burn", "3"]))
        await acme.exec(ExecArgs(argv=["burn", "2.5"]))  # 5.5 of 5: metered after the call

        async def refused() -> bool:
            return bool((await sandbox_report(manager))["tenants"]["acme"]["refused"])

        await eventually(refused, what="acme over its budget")
        with pytest.raises(SandboxQuotaExceeded, match=r"tenant 'acme' is over its CPU budget.*5.5 of 5"):
            await acme.exec(ExecArgs(argv=["true"]))
        with pytest.raises(SandboxQuotaExceeded):
            await chat(manager, "acme", "2").exec(ExecArgs(argv=["true"]))  # a new scope gets none
        await chat(manager, "other", "1").exec(ExecArgs(argv=["burn", "100"]))  # no budget: not held back

        report = await sandbox_report(manager)
        assert report["tenants"]["acme"]["cpu_seconds"] == 5.5
        assert (
            report["tenants"]["acme"]["max_cpu_seconds"] == 5.0 and report["tenants"]["acme"]["sessions"] == 1
        )
        assert any(e["status"] == "quota_exceeded" for e in report["errors"])

        await clock.advance(METER_INTERVAL)  # the tick meters every tenant's containers...

        async def other_metered() -> bool:
            return bool((await sandbox_report(manager))["tenants"]["other"]["cpu_seconds"] == 100.0)

        await eventually(other_metered, what="the tick's meter")
        await clock.advance(METER_INTERVAL)  # ...and journals the charges since the last one
        await journal.flush()
        charges = await read_audit(journal, AuditQuery(tool=CPU_TOOL))
        assert {(r.tenant, r.duration) for r in charges} == {("acme", 5.5), ("other", 100.0)}
        refusals = [
            r for r in await read_audit(journal, AuditQuery(bot="bot-acme")) if r.status == "quota_exceeded"
        ]
        assert len(refusals) == 2 and refusals[0].tool == "exec"

        await clock.advance(HOUR)  # the charges leave the window
        await acme.exec(ExecArgs(argv=["true"]))
    finally:
        await system.shutdown(timeout=10)


async def test_charges_survive_a_restart_through_the_journal(
    fake: FakeEngine, clock: ManualClock, journal: Journal
) -> None:
    first = ActorSystem("budgets-1", clock=clock)
    try:
        manager = first.spawn(
            SandboxManager, "sandbox", "fleet", SETTINGS, partial(MeteredBackend, fake), audit=journal
        )
        await chat(manager, "acme").exec(ExecArgs(argv=["burn", "6"]))

        async def charged() -> bool:
            return bool((await sandbox_report(manager))["tenants"]["acme"]["cpu_seconds"] == 6.0)

        await eventually(charged, what="the burn metered")
    finally:
        await first.shutdown(timeout=10)  # stopping journals what is not saved yet
    await journal.flush()

    second = ActorSystem("budgets-2", clock=clock)  # a restart: a fresh manager, the same journal
    try:
        manager = second.spawn(
            SandboxManager, "sandbox", "fleet", SETTINGS, partial(MeteredBackend, fake), audit=journal
        )
        with pytest.raises(SandboxQuotaExceeded, match=r"6\.0 of 5 CPU-seconds"):
            await chat(manager, "acme").exec(ExecArgs(argv=["true"]))
    finally:
        await second.shutdown(timeout=10)


async def test_a_replaced_container_is_charged_from_zero(fake: FakeEngine, clock: ManualClock) -> None:
    system = ActorSystem("budgets-replaced", clock=clock)
    try:
        manager = system.spawn(SandboxManager, "sandbox", "fleet", SETTINGS, partial(MeteredBackend, fake))
        acme = chat(manager, "acme")
        await acme.exec(ExecArgs(argv=["burn", "3"]))
        await acme.exec(ExecArgs(argv=["wedge"]))  # unhealthy: the session replaces its container
        await acme.exec(ExecArgs(argv=["burn", "1"]))  # the new one, same name, counts from 0

        async def charged() -> bool:
            return bool((await sandbox_report(manager))["tenants"]["acme"]["cpu_seconds"] == 4.0)

        await eventually(charged, what="both containers charged")
        assert fake.creates == 2
    finally:
        await system.shutdown(timeout=10)


async def test_a_tenant_whose_workspaces_hold_too_much_is_refused(
    fake: FakeEngine, clock: ManualClock
) -> None:
    system = ActorSystem("budgets-disk", clock=clock)
    try:
        manager = system.spawn(SandboxManager, "sandbox", "fleet", SETTINGS, partial(MeteredBackend, fake))
        await chat(manager, "acme").exec(ExecArgs(argv=["true"]))
        fake.disk["acme"] = 2 << 20  # type: ignore[attr-defined]
        await clock.advance(METER_INTERVAL)

        async def measured() -> bool:
            return bool((await sandbox_report(manager))["tenants"]["acme"]["disk"] == 2 << 20)

        await eventually(measured, what="the disk metered")
        with pytest.raises(SandboxQuotaExceeded, match=r"over its disk budget.*2097152 of 1048576 bytes"):
            await chat(manager, "acme").exec(ExecArgs(argv=["true"]))
        fake.disk["acme"] = 0  # type: ignore[attr-defined]  # pruned
        await clock.advance(METER_INTERVAL)

        async def allowed() -> bool:
            return (await sandbox_report(manager))["tenants"]["acme"]["refused"] is None

        await eventually(allowed, what="the disk freed")
        await chat(manager, "acme").exec(ExecArgs(argv=["true"]))
    finally:
        await system.shutdown(timeout=10)


def test_status_admin_prints_the_workspace_quota_and_tenants(capsys: pytest.CaptureFixture[str]) -> None:
    report = {
        "state": "up",
        "max_sessions": 20,
        "idle_ttl": 600.0,
        "calls": 3,
        "sessions": [],
        "errors": [],
        "workspaces": {"kind": "loop", "reason": "an ext4 image per workspace in /srv/ws, loop-mounted"},
        "tenants": {
            "acme": {
                "sessions": 1,
                "max_sessions": 5,
                "cpu_seconds": 5.5,
                "max_cpu_seconds": 5.0,
                "cpu_window": 3600.0,
                "disk": None,
                "max_disk": 1048576,
                "refused": "tenant 'acme' is over its CPU budget",
            }
        },
    }
    body = json.dumps(report).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert cli._live(f"http://127.0.0.1:{server.server_address[1]}", None) == 0
    finally:
        server.shutdown()
        server.server_close()
    printed = capsys.readouterr().out
    assert "workspaces: new ones get a loop quota (an ext4 image per workspace in /srv/ws" in printed
    assert "tenant acme: 1 of 5 sessions, 5.5 of 5 CPU-seconds in 3600s, disk not measured" in printed
    assert "(budget 1048576 bytes) - REFUSED" in printed


def test_budget_settings_parse_and_name_bad_values() -> None:
    settings = SandboxSettings(
        tenant_max_cpu_seconds={"acme": "30m", "beta": 90},
        tenant_cpu_window="2h",
        tenant_max_disk={"acme": "2g"},
        workspace_dir="/srv/callboard/workspaces",
    )
    assert settings.tenant_max_cpu_seconds == {"acme": 1800.0, "beta": 90.0}
    assert settings.tenant_cpu_window == 7200.0 and settings.tenant_max_disk == {"acme": 2 << 30}
    with pytest.raises(ValidationError, match=r"tenant_max_cpu_seconds\.acme"):
        SandboxSettings(tenant_max_cpu_seconds={"acme": "lots"})
    with pytest.raises(ValidationError, match=r"tenant_max_disk\.acme"):
        SandboxSettings(tenant_max_disk={"acme": "big"})
    with pytest.raises(ValidationError, match="workspace_dir must be an absolute path"):
        SandboxSettings(workspace_dir="var/workspaces")
