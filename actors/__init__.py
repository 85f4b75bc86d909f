"""The actor runtime: pure aggregates served by actors with bounded mailboxes.

Write an `Aggregate` (an initial state, `decide` and `evolve` over `Command` and `Event`
structs), open a system on a store with `open_system`, and send commands through
`system.aggregates(MyAggregate)`: `await router.ask(id, command)` returns once the
events are committed. `actors.testing` has given/when/then helpers for aggregates.
"""

from __future__ import annotations

from actors._aggregate import SECRET, Aggregate, Command, CommandResult, Event
from actors._decode import CommandDecoder, InvalidCommand
from actors._dispatch import Dispatch, StepRefused
from actors._errors import (
    ActorError,
    AskTimeout,
    CommandFailed,
    EvolveError,
    InvalidOption,
    MailboxFull,
    Overloaded,
    RecoveryError,
    ReentrantAskError,
    Rejected,
    RestartLimitExceeded,
    ShuttingDown,
    TooManyAttempts,
)
from actors._options import AggregateSettings, OpenSystemSettings, SystemOptions, SystemSettings
from actors._plain import ActorRef
from actors._process_manager import (
    ParkedStep,
    ProcessManager,
    ProcessManagerHandle,
    ProcessManagerOptions,
    ProcessManagerStatistics,
)
from actors._router import AggregateRouter
from actors._system import ActorSystem, Projectable, SystemStatistics, open_system

__all__ = [
    "SECRET",
    "ActorError",
    "ActorRef",
    "ActorSystem",
    "Aggregate",
    "AggregateRouter",
    "AggregateSettings",
    "AskTimeout",
    "Command",
    "CommandDecoder",
    "CommandFailed",
    "CommandResult",
    "Dispatch",
    "Event",
    "EvolveError",
    "InvalidCommand",
    "InvalidOption",
    "MailboxFull",
    "OpenSystemSettings",
    "Overloaded",
    "ParkedStep",
    "ProcessManager",
    "ProcessManagerHandle",
    "ProcessManagerOptions",
    "ProcessManagerStatistics",
    "Projectable",
    "RecoveryError",
    "ReentrantAskError",
    "Rejected",
    "RestartLimitExceeded",
    "ShuttingDown",
    "StepRefused",
    "SystemOptions",
    "SystemSettings",
    "SystemStatistics",
    "TooManyAttempts",
    "open_system",
]
