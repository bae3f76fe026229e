"""The typed journal entries the driver writes. Every view of a run (CLI `status`, Slack, `/metrics`,
the postmortem) reads these, so their fields are the contract between a run and its readers.

    journal.write(run_id, Outcome(outcome="succeeded", summary="offsets of billing reset"))

Each model knows its journal kind; `payload()` is what lands in the entry's `data`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

# The closed set of ways a run ends. `rejected` covers a gate that timed out too (its rejection
# entry says by="timeout"); `refused` is a precondition that stopped the run before the gate.
OUTCOMES = ("succeeded", "failed", "rejected", "unchanged", "refused", "cancelled", "crashed")
OutcomeName = Literal["succeeded", "failed", "rejected", "unchanged", "refused", "cancelled", "crashed"]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    KIND: ClassVar[str]

    summary: str = Field(description="one line in the operator's words: the timeline, Slack, the postmortem")
    data: dict[str, Any] = Field(default_factory=dict,
                                 description="more fields for readers of the journal (`status --json`), plain JSON")

    def payload(self) -> dict[str, Any]:
        fields = self.model_dump(mode="json", exclude={"summary", "data"})
        extra = {key: value for key, value in self.data.items() if key != "summary"}  # the entry has its own
        return {**extra, **fields}


class Start(Record):
    KIND: ClassVar[str] = "parameters"
    runbook: str
    parameters: dict[str, Any]
    requested_by: str
    trigger: dict[str, Any] = Field(default_factory=dict)
    target: str


class PlanRecord(Record):
    """The plan as computed (again after each approval that found it changed)."""

    KIND: ClassVar[str] = "plan"
    digest: str
    columns: list[str]
    rows: list[list[Any]]
    changes_anything: bool
    csv: str
    markdown: str


class Snapshot(Record):
    """What the runbook saved before changing anything, and the command that puts it back."""

    KIND: ClassVar[str] = "snapshot"
    path: str | None = Field(None, description="a file holding what was saved (e.g. under RUNBOOK_SNAPSHOT_DIR)")
    csv: str = Field("", description="what was saved as CSV, when it is a table (shown in the postmortem)")
    restore_command: str | None = Field(None, description="the command a person runs to put it back by hand; "
                                        "it must really restore it (the postmortem prints it)")


class Action(Record):
    """One change made. `step` is its fence: a run never applies the same step twice."""

    KIND: ClassVar[str] = "action"
    step: str


class Verification(Record):
    """What `verify` read back after `act`: `ok=False` fails the run (and restores the snapshot)."""

    KIND: ClassVar[str] = "verification"
    ok: bool = Field(True, description="the change had the effect it was meant to have")


class Restore(Record):
    """What `restore` put back after a failure (journal kind `rollback`)."""

    KIND: ClassVar[str] = "rollback"
    restored: bool = Field(description="True when the snapshot is back in place; False says it is not")
    restore_command: str | None = Field(None, description="how to finish the restore by hand, when it is not")


class Outcome(Record):
    KIND: ClassVar[str] = "outcome"
    outcome: OutcomeName
    changed: list[str] = Field(default_factory=list, description="the actions that changed something")
