"""The run journal: the one record of a run that every later view reads (CLI status, Slack, the
postmortem, the audit trail).

Each entry is appended as its own Prefect artifact of type `runbook-journal`, attached to the flow
run. Append-only entries need no read-modify-write, so the flow, the CLI (a refused approval) and
any `runbook serve` replica can all write to one run's journal, and any process that reaches the
Prefect API can read it, during the run or long after.

An entry: {"at": ISO-8601 UTC, "kind": one of KINDS, "summary": one line, "data": {...}}.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
from prefect.client.schemas.sorting import ArtifactSort

if TYPE_CHECKING:
    from mq_runbooks.kit.records import Record

ARTIFACT_TYPE = "runbook-journal"
KINDS = (
    "trigger", "parameters", "lock", "observation", "plan", "approval_requested", "approval",
    "approval_refused", "rejection", "snapshot", "action", "verification", "rollback", "error",
    "outcome", "note", "alert_resolved", "slack", "postmortem",
)


@dataclass(frozen=True)
class Entry:
    at: dt.datetime
    kind: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "summary": self.summary, "data": self.data}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> "Entry":
        return cls(dt.datetime.fromisoformat(document["at"]), document["kind"], document["summary"],
                   document.get("data") or {})


_listeners: list = []


def add_listener(listener) -> None:
    """Call `listener(run_id, entry)` after each entry this process records (e.g. to mirror a run's
    progress to Slack). A listener's failure never fails the record."""
    _listeners.append(listener)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def record(flow_run_id: UUID | str, kind: str, summary: str, **data: Any) -> Entry:
    """Append one entry to a run's journal and return it."""
    if kind not in KINDS:
        raise ValueError(f"journal kind {kind!r} is not one of {', '.join(KINDS)}")
    entry = Entry(now_utc(), kind, summary, data)
    with get_client(sync_client=True) as client:
        client.create_artifact(ArtifactCreate(
            type=ARTIFACT_TYPE, flow_run_id=UUID(str(flow_run_id)), description=f"{kind}: {summary}"[:500],
            data=entry.to_json(),
        ))
    for listener in list(_listeners):
        try:
            listener(str(flow_run_id), entry)
        except Exception:  # noqa: BLE001  (a mirror must not break the record)
            pass
    return entry


def write(flow_run_id: UUID | str, entry: "Record") -> Entry:
    """Append a typed record (mq_runbooks.kit.records) to a run's journal."""
    return record(flow_run_id, entry.KIND, entry.summary, **entry.payload())


def read(flow_run_id: UUID | str, client=None) -> list[Entry]:
    """Every entry of a run's journal, oldest first; over `client` (a sync Prefect client) when given,
    else over a client of its own."""
    if client is None:
        with get_client(sync_client=True) as own:
            return read(flow_run_id, own)
    entries: list[Entry] = []
    artifact_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))]),
        type=ArtifactFilterType(any_=[ARTIFACT_TYPE]),
    )
    offset = 0
    while True:
        page = client.read_artifacts(artifact_filter=artifact_filter, sort=ArtifactSort.CREATED_DESC,
                                     limit=200, offset=offset)
        entries += [Entry.from_json(artifact.data) for artifact in page if isinstance(artifact.data, dict)]
        if len(page) < 200:
            break
        offset += 200
    return sorted(entries, key=lambda entry: entry.at)


def last(entries: list[Entry], kind: str) -> Entry | None:
    """The newest entry of a kind, if any."""
    matching = [entry for entry in entries if entry.kind == kind]
    return matching[-1] if matching else None
