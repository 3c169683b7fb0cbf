"""callboard's engine: the actor runtime, typed events, the journal, metrics.

The engine knows no chat platform.
"""

from callboard.engine.actor import Actor, MailboxPolicy
from callboard.engine.clock import Clock, LoopClock, ManualClock
from callboard.engine.context import ActorContext
from callboard.engine.errors import (
    ActorDeadError,
    ActorError,
    AskTimeout,
    InvalidNameError,
    MailboxFull,
    NameTakenError,
    RestartLimitExceeded,
    SystemShutDownError,
)
from callboard.engine.loop import new_event_loop, run
from callboard.engine.metrics import RuntimeMetrics
from callboard.engine.ref import ActorRef
from callboard.engine.signals import ExitReason, ReceiveTimeout, Terminated
from callboard.engine.supervision import Backoff, Directive, SupervisorStrategy, decider_from_mapping
from callboard.engine.system import ActorSystem

__all__ = [
    "Actor",
    "ActorContext",
    "ActorDeadError",
    "ActorError",
    "ActorRef",
    "ActorSystem",
    "AskTimeout",
    "Backoff",
    "Clock",
    "Directive",
    "ExitReason",
    "InvalidNameError",
    "LoopClock",
    "MailboxFull",
    "MailboxPolicy",
    "ManualClock",
    "NameTakenError",
    "ReceiveTimeout",
    "RestartLimitExceeded",
    "RuntimeMetrics",
    "SupervisorStrategy",
    "SystemShutDownError",
    "Terminated",
    "decider_from_mapping",
    "new_event_loop",
    "run",
]
