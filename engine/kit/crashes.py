"""Runs whose process died are detected and told, with nobody watching them.

- Every flow run emits heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set by Settings.apply_to_prefect).
- An automation on the Prefect server (created here, idempotently, by `runbook serve` and
  `runbook run`) marks a run Crashed when it misses its heartbeats for ZOMBIE_AFTER_S: so a run
  whose process was killed (SIGKILL, a lost machine) does not stay Running forever.
- `conclude_crashed()` (swept by `runbook serve`, and by `runbook status` for one run) gives each
  crashed run what a run that ends normally has: its outcome in the journal (`crashed`, with the steps
  it had applied), its postmortem draft (with the restore command of its snapshot), and the Slack
  thread's last line (through the journal's listeners).
"""
from __future__ import annotations

import datetime as dt
from datetime import timedelta

from mq_runbooks.kit import journal
from mq_runbooks.kit.records import Outcome

HEARTBEAT_S = 30  # Prefect's minimum
ZOMBIE_AFTER_S = 120  # four missed heartbeats: a loaded server may deliver one late
AUTOMATION_NAME = "mq-runbooks: crash runs that stopped their heartbeats"
RUN_TAG = "mq-runbooks"


def ensure_zombie_automation() -> bool:
    """Create the automation (or bring one an older version made up to date); True if it was created now."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    wanted = Automation(
        name=AUTOMATION_NAME,
        description="Marks a flow run Crashed when it sent no heartbeat (and reached no final state) for "
                    f"{ZOMBIE_AFTER_S}s: its process died. Created by mq-runbooks.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_S),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {ZOMBIE_AFTER_S}s: the run's process died")],
    )
    try:
        existing = Automation.read(name=AUTOMATION_NAME)
    except ValueError:
        wanted.create()
        return True
    if existing.trigger != wanted.trigger or existing.actions != wanted.actions:  # made by an older version
        existing.trigger, existing.actions, existing.description = wanted.trigger, wanted.actions, wanted.description
        existing.update()
    return False


def steps_applied(entries: list[journal.Entry]) -> list[str]:
    return [entry.summary for entry in entries if entry.kind == "action"]


def conclude(run_id: str, message: str) -> bool:
    """Record the outcome of one crashed run (once) and draft its postmortem; True if it was concluded now."""
    from mq_runbooks.kit.steps import publish_postmortem

    entries = journal.read(run_id)
    if journal.last(entries, "outcome") is not None:
        return False
    applied = steps_applied(entries)
    snapshot = journal.last(entries, "snapshot")
    restore = snapshot.data.get("restore_command") if snapshot else None
    if applied:
        what = f"after applying: {'; '.join(applied)}" + (f". Restore with: {restore}" if restore else "")
    else:
        what = "before changing anything"
    journal.write(run_id, Outcome(outcome="crashed", summary=f"crashed {what} ({message})", changed=applied,
                                  data={"restore_command": restore}))
    publish_postmortem(run_id)
    return True


def recent_crashed(since: dt.timedelta = dt.timedelta(days=2), limit: int = 200) -> dict[str, str]:
    """Recently crashed runs of ours: id -> the state's message."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterStartTime, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    run_filter = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[RUN_TAG]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
        start_time=FlowRunFilterStartTime(after_=dt.datetime.now(dt.timezone.utc) - since),
    )
    with get_client(sync_client=True) as client:
        crashed = client.read_flow_runs(flow_run_filter=run_filter, limit=limit)
    return {str(run.id): (run.state.message if run.state else None) or "Crashed" for run in crashed}


def conclude_crashed(crashed: dict[str, str] | None = None) -> list[str]:
    """Conclude every recently crashed run of ours that has no outcome yet; the ids concluded now."""
    crashed = recent_crashed() if crashed is None else crashed
    return [run_id for run_id, message in crashed.items() if conclude(run_id, message)]
