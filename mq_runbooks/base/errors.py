"""Every error the engine raises on purpose derives from `RunbookError`.

    RunbookError
    ├── ConfigError             a settings value, clusters.yaml or a runbook file is invalid
    │   └── CatalogError        a runbook file in the catalog is invalid
    ├── UsageError              a person asked for something invalid (the CLI exits 2)
    │   ├── ParameterError      bad runbook parameters (names every invalid field)
    │   └── NotFoundError       no such runbook, run or cluster
    │       └── UnknownClusterError
    └── BrokerError             a broker or service could not be reached or refused a request
        ├── UnreachableError    the service did not answer within the time allowed
        └── PreconditionError   the target is in a state the action may not run in

Messages say what was wrong and what is allowed, so the CLI prints them as they are.
"""
from __future__ import annotations


class RunbookError(Exception):
    """The root of the engine's own errors."""


class ConfigError(RunbookError):
    """Configuration (settings, clusters.yaml, a runbook file) is invalid."""


class CatalogError(ConfigError):
    """A runbook file is invalid; the message names the file and the field."""


class UsageError(RunbookError):
    """A person asked for something invalid; nothing was changed."""


class ParameterError(UsageError):
    """A runbook's parameters are invalid.

    `problems` holds one (field, message) pair per invalid parameter.
    """

    def __init__(self, runbook: str, problems: list[tuple[str, str]]):
        self.runbook = runbook
        self.problems = problems
        lines = "\n".join(f"  {field}: {message}" for field, message in problems)
        super().__init__(f"invalid parameters for runbook {runbook!r}:\n{lines}")


class NotFoundError(UsageError):
    """No runbook, run or cluster of that name."""


class UnknownClusterError(NotFoundError):
    """A cluster name that clusters.yaml does not define."""


class BrokerError(RunbookError):
    """A broker or service failed a request."""


class UnreachableError(BrokerError):
    """A broker or service did not answer within the time allowed."""


class PreconditionError(BrokerError):
    """The target is not in a state the action may run in (e.g. a consumer group with members)."""
