"""Tenant budgets: CPU-seconds within a sliding window, and disk held by persistent workspaces.

Pure bookkeeping on given timestamps (the manager passes its clock's wall time, so the window
is tested on a ``ManualClock``). ``TenantBudgets.refusal`` says why a tenant's next sandbox
call is refused, naming the budget, or None. CPU charges are kept per tenant as (time,
seconds) samples; the manager persists the unsaved ones in the journal's audit table
(``usage.cpu`` rows) and restores them after a restart with ``charge``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

#: the audit log's tool name for a CPU charge (its ``duration`` holds the CPU seconds)
CPU_TOOL = "usage.cpu"


@dataclass(frozen=True)
class TenantUsage:
    """One tenant as the status page shows it."""

    tenant: str
    cpu_seconds: float
    max_cpu_seconds: float | None
    disk: int | None
    max_disk: int | None
    #: the refusal in force, if any
    refused: str | None


class TenantBudgets:
    """CPU and disk budgets of every tenant (``sandbox.tenant_max_cpu_seconds``,
    ``tenant_cpu_window``, ``tenant_max_disk``)."""

    def __init__(self, max_cpu: dict[str, float], window: float, max_disk: dict[str, int]) -> None:
        self.max_cpu = max_cpu
        self.window = window
        self.max_disk = max_disk
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._unsaved: dict[str, float] = {}
        #: bytes each tenant's workspaces held when last measured
        self.disk: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Anything to meter at all."""
        return bool(self.max_cpu or self.max_disk)

    def charge(self, tenant: str, seconds: float, at: float, saved: bool = False) -> None:
        """``seconds`` of CPU used by ``tenant``'s containers, observed at ``at``."""
        if seconds <= 0:
            return
        self._samples.setdefault(tenant, deque()).append((at, seconds))
        if not saved:
            self._unsaved[tenant] = self._unsaved.get(tenant, 0.0) + seconds

    def take_unsaved(self) -> dict[str, float]:
        """Charges not yet persisted (and forget them: the caller persists them now)."""
        unsaved, self._unsaved = self._unsaved, {}
        return unsaved

    def cpu_used(self, tenant: str, now: float) -> float:
        """CPU seconds ``tenant`` used within the window ending at ``now``."""
        samples = self._samples.get(tenant)
        if not samples:
            return 0.0
        while samples and samples[0][0] <= now - self.window:
            samples.popleft()
        return sum(seconds for _, seconds in samples)

    def cpu_frees_at(self, tenant: str, now: float) -> float:
        """When enough old charges leave the window for ``tenant`` to be under its budget."""
        budget = self.max_cpu[tenant]
        used = self.cpu_used(tenant, now)
        for at, seconds in self._samples.get(tenant, ()):
            if used < budget:
                break
            used -= seconds
            now = at + self.window
        return now

    def refusal(self, tenant: str | None, now: float) -> str | None:
        """Why ``tenant`` may not start a sandbox call now (naming the budget), or None."""
        if tenant is None:
            return None
        budget = self.max_cpu.get(tenant)
        if budget is not None:
            used = self.cpu_used(tenant, now)
            if used >= budget:
                wait = self.cpu_frees_at(tenant, now) - now
                return (
                    f"tenant {tenant!r} is over its CPU budget (sandbox.tenant_max_cpu_seconds): "
                    f"{used:.1f} of {budget:g} CPU-seconds used in the last {_span(self.window)}; "
                    f"sandbox calls are refused for about {_span(wait)}"
                )
        limit = self.max_disk.get(tenant)
        held = self.disk.get(tenant)
        if limit is not None and held is not None and held > limit:
            return (
                f"tenant {tenant!r} is over its disk budget (sandbox.tenant_max_disk): its persistent "
                f"workspaces hold {held} of {limit} bytes; sandbox calls are refused until some are "
                "pruned (callboard sandbox prune) or the budget is raised"
            )
        return None

    def report(self, tenants: set[str], now: float) -> list[TenantUsage]:
        names = sorted(tenants | set(self.max_cpu) | set(self.max_disk) | set(self._samples))
        return [
            TenantUsage(
                tenant=name,
                cpu_seconds=round(self.cpu_used(name, now), 3),
                max_cpu_seconds=self.max_cpu.get(name),
                disk=self.disk.get(name),
                max_disk=self.max_disk.get(name),
                refused=self.refusal(name, now),
            )
            for name in names
        ]


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{seconds:.0f}s"
