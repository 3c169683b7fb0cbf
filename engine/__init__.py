"""callboard's engine: the actor runtime, typed events, the journal, metrics.

The engine knows no chat platform.
"""

from engine.actor import Actor, MailboxPolicy
from engine.cell import ActorCell
from engine.clock import Clock, LoopClock, ManualClock
from engine.errors import (
    ActorDeadError,
    ActorError,
    AskTimeout,
    InvalidNameError,
    MailboxFull,
    NameTakenError,
    RestartLimitExceeded,
    SystemShutDownError,
)
from engine.loop import new_event_loop, run
from engine.metrics import RuntimeMetrics
from engine.ref import ActorRef
from engine.signals import ExitReason, ReceiveTimeout, Terminated
from engine.supervision import Backoff, Directive, SupervisorStrategy, decider_from_mapping
from engine.system import ActorSystem

ActorContext = ActorCell

__all__ = [
    "Actor",
    "ActorCell",
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
