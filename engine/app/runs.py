"""Runs of runbooks, seen from outside the flow: start one, list them, read one's state and journal,
answer its approval gate. The CLI (and later the HTTP app) are thin edges over these functions.

A run started here is a Prefect flow run created on the server, then executed by a detached
`python -m mq_runbooks.app.executor RUN_ID` process, so `runbook run` can return at once and the run keeps
its process while it waits at the gate. (`runbook serve` runs them from deployments instead.)
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import resume_flow_run
from pydantic import BaseModel

from mq_runbooks.base.catalog import Catalog, Runbook
from mq_runbooks.base.errors import NotFoundError, UsageError
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.teams import teams_for
from mq_runbooks.kit import journal
from mq_runbooks.kit.gate import refusal
from mq_runbooks.kit.identity import proof_kind, verify_answer
from mq_runbooks.kit.lock import lock_tag

RUNBOOK_TAG = "mq-runbooks"


@dataclass(frozen=True)
class RunView:
    """A run as people see it: Prefect's state plus the journal."""

    id: str
    name: str
    runbook: str
    state: str  # Prefect's state name, e.g. Running, Paused, Completed, Rejected, Failed
    state_type: str
    message: str
    started: str | None
    entries: list[journal.Entry]

    @property
    def finished(self) -> bool:
        return self.state_type in {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

    @property
    def succeeded(self) -> bool:
        return self.state_type == "COMPLETED"

    def waiting_for(self) -> str | None:
        """Who the gate waits for, when it waits."""
        if self.state_type != "PAUSED":
            return None
        request = journal.last(self.entries, "approval_requested")
        if request is None:
            return "an approval"
        return f"{request.data.get('required', 1)} approval(s) from {', '.join(request.data.get('approvers', []))}"


@functools.cache
def _ensure_crash_detection() -> None:
    """Once a process: the server's automation that crashes runs whose heartbeats stopped."""
    from mq_runbooks.kit.crashes import ensure_zombie_automation

    ensure_zombie_automation()


def start_run(settings: Settings, runbook: Runbook, params: BaseModel, requested_by: str,
              trigger: dict[str, Any] | None = None) -> str:
    """Create the flow run and start its executor; returns the run id at once."""
    parameters = {"params": params.model_dump(mode="json"), "requested_by": requested_by, "trigger": trigger or {}}
    tags = [RUNBOOK_TAG, f"runbook:{runbook.id}", lock_tag(runbook.lock_key(params))]
    _ensure_crash_detection()
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(runbook.flow_function, parameters=parameters, tags=tags)
    log_dir = settings.snapshot_dir.parent / "run-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{flow_run.id}.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "mq_runbooks.app.executor", str(flow_run.id)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env=dict(os.environ, PREFECT_API_URL=settings.prefect_api_url),
        )
    return str(flow_run.id)


def _read(client, run_id: str) -> FlowRun:
    try:
        return client.read_flow_run(UUID(run_id))
    except (ValueError, ObjectNotFound):
        raise NotFoundError(f"no run {run_id!r} (list them with: runbook runs)") from None


def read_run(run_id: str) -> RunView:
    with get_client(sync_client=True) as client:
        flow_run = _read(client, run_id)
    return _view(flow_run, journal.read(flow_run.id))


def _view(flow_run: FlowRun, entries: list[journal.Entry]) -> RunView:
    state = flow_run.state
    runbook = next((t.split(":", 1)[1] for t in flow_run.tags if t.startswith("runbook:")), "?")
    return RunView(
        id=str(flow_run.id), name=flow_run.name, runbook=runbook,
        state=state.name if state else "Unknown", state_type=state.type.value if state else "UNKNOWN",
        message=(state.message or "") if state else "",
        started=(flow_run.start_time or flow_run.created).isoformat() if (flow_run.start_time or flow_run.created) else None,
        entries=entries,
    )


def list_runs(limit: int = 20, runbook_id: str | None = None) -> list[RunView]:
    tags = [RUNBOOK_TAG] + ([f"runbook:{runbook_id}"] if runbook_id else [])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags)),
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
    return [_view(run, []) for run in runs]


def answer_gate(settings: Settings, catalog: Catalog, run_id: str, approved: bool, by: str, comment: str,
                via: str = "cli", proof: str = "") -> RunView:
    """Approve or reject a run waiting at its gate, after checking the runbook's policy and the proof
    of who answers (`proof`: "token:<t>" or empty for a typed name; the run checks it again).

    A refused answer is recorded in the run's journal and raised as UsageError with the reason.
    """
    view = read_run(run_id)
    if view.state_type != "PAUSED":
        raise UsageError(f"run {run_id} is not waiting for approval (its state is {view.state})")
    request = journal.last(view.entries, "approval_requested")
    if request is None:
        raise UsageError(f"run {run_id} is paused but has not asked for approval")
    policy = catalog.get(view.runbook).approval
    approvals_since = [e.data.get("by") for e in view.entries if e.kind == "approval" and e.at >= request.at]
    teams = teams_for(settings)
    by, reason = verify_answer(by, proof, teams, settings.deployment)
    reason = reason or refusal(policy, teams, request.data.get("requester", ""), by, approved, approvals_since)
    if not approved and not comment.strip():
        reason = reason or "a rejection needs a reason (--reason)"
    if reason:
        journal.record(run_id, "approval_refused", reason, by=by, approved=approved, via=via, proof=proof_kind(proof))
        raise UsageError(f"refused: {reason}")
    try:
        resume_flow_run(UUID(run_id), run_input={
            "approved": approved, "by": by, "comment": comment, "plan_digest": request.data.get("plan_digest", ""),
            "proof": proof,
        })
    except Exception as exc:  # e.g. someone answered a moment earlier, or the pause timed out
        raise UsageError(f"run {run_id} could not be resumed: {exc}") from None
    return view


def run_log_path(settings: Settings, run_id: str) -> Path:
    return settings.snapshot_dir.parent / "run-logs" / f"{run_id}.log"
