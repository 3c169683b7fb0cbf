"""Supervisor strategies, after Erlang/OTP and Akka.

A strategy is attached to a child when it is spawned; the parent applies it
when that child fails. ``one_for_one`` restarts only the failed child;
``one_for_all`` restarts every sibling spawned with the same strategy object.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class Directive(enum.Enum):
    RESUME = "resume"  # keep the instance and its state, skip the failed message
    RESTART = "restart"  # fresh instance, same mailbox
    STOP = "stop"  # stop the child for good
    ESCALATE = "escalate"  # fail the parent with the same error


Decider = Callable[[BaseException], Directive]


def decider_from_mapping(mapping: Mapping[type[BaseException], Directive | str]) -> Decider:
    """Map exception types to directives; the most specific type in the MRO wins.

    Exceptions matching no entry restart the actor.
    """
    table = {exc_type: Directive(d) for exc_type, d in mapping.items()}

    def decide(error: BaseException) -> Directive:
        for klass in type(error).__mro__:
            directive = table.get(klass)
            if directive is not None:
                return directive
        return Directive.RESTART

    return decide


def _always_restart(error: BaseException) -> Directive:
    return Directive.RESTART


@dataclass(frozen=True)
class Backoff:
    """Delay between restarts: ``min(max, min * factor**n) * (1 + U[0,1) * jitter)``.

    ``n`` counts consecutive restarts and resets after ``reset_after`` seconds
    without a failure (default: the midpoint of min and max, as Akka does).
    """

    min: float = 0.2
    max: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if self.min < 0 or self.max < self.min or self.factor < 1 or self.jitter < 0:
            raise ValueError(f"invalid backoff {self!r}: need 0 <= min <= max, factor >= 1, jitter >= 0")

    @property
    def quiet_period(self) -> float:
        return self.reset_after if self.reset_after is not None else (self.min + self.max) / 2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = self.min * (self.factor ** min(attempt, 64))
        base = min(self.max, base)
        return base * (1.0 + (rng or random).random() * self.jitter)


@dataclass
class SupervisorStrategy:
    """How a parent treats a failing child.

    ``max_restarts`` restarts within ``within_seconds`` are allowed (``None``:
    unlimited); past that the child is stopped and, when ``escalate_on_limit``,
    the parent fails with ``RestartLimitExceeded`` (OTP semantics).
    """

    kind: str = "one_for_one"
    decider: Decider = _always_restart
    max_restarts: int | None = 3
    within_seconds: float = 5.0
    backoff: Backoff | None = None
    escalate_on_limit: bool = True
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("one_for_one", "one_for_all"):
            raise ValueError(f"unknown supervisor strategy kind {self.kind!r}")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0 or None")

    @classmethod
    def one_for_one(cls, **kwargs: object) -> SupervisorStrategy:
        return cls(kind="one_for_one", **_with_decider(kwargs))  # type: ignore[arg-type]

    @classmethod
    def one_for_all(cls, **kwargs: object) -> SupervisorStrategy:
        return cls(kind="one_for_all", **_with_decider(kwargs))  # type: ignore[arg-type]

    def decide(self, error: BaseException) -> Directive:
        return self.decider(error)


def _with_decider(kwargs: dict[str, object]) -> dict[str, object]:
    decider = kwargs.get("decider")
    if isinstance(decider, Mapping):
        kwargs = {**kwargs, "decider": decider_from_mapping(decider)}
    return kwargs


class RestartStats:
    """Restart history of one child (one_for_one) or one sibling group (one_for_all)."""

    __slots__ = ("last_failure", "streak", "times")

    def __init__(self) -> None:
        self.times: deque[float] = deque()
        self.streak = 0
        self.last_failure: float | None = None

    def record(self, now: float, strategy: SupervisorStrategy) -> tuple[bool, float]:
        """Count a restart at ``now``; return (allowed, backoff delay)."""
        backoff = strategy.backoff
        last = self.last_failure
        if backoff is not None and last is not None and now - last >= backoff.quiet_period:
            self.streak = 0
        self.last_failure = now
        if strategy.max_restarts is not None:
            horizon = now - strategy.within_seconds
            while self.times and self.times[0] <= horizon:
                self.times.popleft()
            if len(self.times) >= strategy.max_restarts:
                return False, 0.0
            self.times.append(now)
        delay = backoff.delay(self.streak, strategy.rng) if backoff is not None else 0.0
        self.streak += 1
        return True, delay


DEFAULT_STRATEGY = SupervisorStrategy()
