"""The typed journal entries the driver writes. Every view of a run (CLI `status`, Slack, `/metrics`,
the postmortem) reads these, so their fields are the contract between a run and its readers.

    journal.write(run_id, Outcome(outcome="succeeded", summary="offsets of billing reset"))

Each model knows its journal kind; `payload()` is what lands in the entry's `data`. This is the one way
to write the journal: every entry, the driver's, the gate's, Slack's, the CLI's, is one of these.
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


class Note(Record):
    """A line worth keeping in the run's timeline (`run.note`)."""

    KIND: ClassVar[str] = "note"


class Observation(Record):
    """Something the run saw on the broker (`run.observed`)."""

    KIND: ClassVar[str] = "observation"


class Lock(Record):
    """The run holds the lock of its target (the lease a run executed again adopts)."""

    KIND: ClassVar[str] = "lock"
    key: str
    lease_id: str


class Error(Record):
    """A failure as it was raised (`Type: message`); the outcome says what it meant for the run."""

    KIND: ClassVar[str] = "error"


class ApprovalRequested(Record):
    """A gate round asked for approval of the plan with `plan_digest`."""

    KIND: ClassVar[str] = "approval_requested"
    runbook: str
    approvers: list[str]
    required: int
    self_approval: bool
    timeout_s: float
    requester: str
    plan_digest: str
    gate: int


class ApprovalRecord(Record):
    """One approval a gate round took (`approvals` of `required` so far)."""

    KIND: ClassVar[str] = "approval"
    by: str
    comment: str
    plan_digest: str
    approvals: int
    required: int
    proof: str
    gate: int
    answer: str


class Rejection(Record):
    """The gate said no: a person (`by`) or the deadline (`by="timeout"`)."""

    KIND: ClassVar[str] = "rejection"
    by: str


class ApprovalRefused(Record):
    """An answer (or a cancel) that was not taken, with why in the summary; the gate waits on."""

    KIND: ClassVar[str] = "approval_refused"
    by: str | None = Field(description="who answered, as far as it was proven (None: nobody named)")


class SlackMessage(Record):
    """What Slack did for the run (`ok=False`: trouble, the gate still answers the CLI)."""

    KIND: ClassVar[str] = "slack"
    ok: bool


class PostmortemWritten(Record):
    """Where the run's postmortem draft is, and its review page."""

    KIND: ClassVar[str] = "postmortem"
    path: str
    url: str


class AlertResolved(Record):
    """The alert that started the run resolved."""

    KIND: ClassVar[str] = "alert_resolved"
    alertname: str
    endsAt: str  # noqa: N815  (Alertmanager's own name, as readers of the journal know it)
    fingerprint: str
