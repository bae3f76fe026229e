"""Faults for tests, injected by the driver at a run's steps: a runbook never branches on them.

`RUNBOOK_INJECT_FAULT` names a point and, where it has one, a step key (a glob: `batch:*` is the
first step whose key matches):

    fail-before:KEY            the step fails before its change: nothing of it is applied
    fail-during:KEY            the step's change is applied, then the step fails, as a broker that dies
                               mid-change would (no journal entry; a `partial` step counts as changed)
    fail-after:KEY             the step is applied and journalled, then the run fails
    stall-after:KEY[:SECONDS]  the run sleeps after the step (default an hour): a process to kill or watch
    verify                     the verification is forced to fail (after the runbook's own read-back)

    fault = Fault.parse("fail-before:move-offsets")
    fault.hits("fail-before", "move-offsets")   # True
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from mq_runbooks.base.errors import BrokerError, ConfigError

STEP_POINTS = ("fail-before", "fail-during", "fail-after", "stall-after")
POINTS = (*STEP_POINTS, "verify")
STALL_S = 3600.0


@dataclass(frozen=True)
class Fault:
    point: str
    key: str = ""
    seconds: float = STALL_S

    @classmethod
    def parse(cls, text: str | None) -> Fault | None:
        """The fault RUNBOOK_INJECT_FAULT names (None when empty); ConfigError naming what is allowed."""
        if not text:
            return None
        point, _, rest = text.partition(":")
        if point == "verify" and not rest:
            return cls(point)
        if point not in STEP_POINTS or not rest:
            raise ConfigError(f"RUNBOOK_INJECT_FAULT={text!r}: expected verify or POINT:STEP_KEY with POINT one "
                              f"of {', '.join(STEP_POINTS)} (stall-after:STEP_KEY[:SECONDS])")
        if point == "stall-after":
            key, _, seconds = rest.rpartition(":")
            try:
                return cls(point, key, float(seconds)) if key else cls(point, rest)
            except ValueError:
                return cls(point, rest)  # a key with a colon in it, no seconds
        return cls(point, rest)

    def hits(self, point: str, key: str = "") -> bool:
        """Whether this fault is injected at `point` of the step `key`."""
        return self.point == point and (point == "verify" or fnmatchcase(key, self.key))

    def error(self, key: str) -> BrokerError:
        """The failure injected at step `key`: a broker's, as the runbook would meet it."""
        where = {"fail-before": "failed before its change", "fail-during": "failed part-way, after its change "
                 "reached the broker", "fail-after": "was applied, then the run failed"}[self.point]
        return BrokerError(f"injected fault: step {key} {where}")


__all__ = ["Fault", "POINTS"]
