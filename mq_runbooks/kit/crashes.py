"""Runs whose process died are detected and told, with nobody watching them.

- Every flow run emits heartbeats (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set by Settings.apply_to_prefect).
- An automation on the Prefect server (created here, idempotently, by `runbook serve` and
  `runbook run`; one per window, see `automation_name`) marks a run Crashed when it misses its
  heartbeats for ZOMBIE_AFTER_S: so a run whose process was killed (SIGKILL, a lost machine) does
  not stay Running forever.
- `conclude_crashed()` (swept by `runbook serve`, and by `runbook status` for one run) gives each
  crashed run what a run that ends normally has: its outcome in the journal (`crashed`, with the steps
  it had applied), its postmortem draft (with the restore command of its snapshot), and the Slack
  thread's last line (through the journal's listeners). Its lock's lease is released at once.
- A run of a work pool that crashed before its process started (the worker could not submit it: the
  Prefect server answered 503 for a moment) is made due again, up to RESUBMIT_AT_MOST times, rather
  than concluded: nothing of it ran, so the alert that started it is not lost.
- A run suspended at its gate has no process to notice its deadline: the Prefect server fails it
  ("never resumed"), and `conclude_expired()` (the same sweepers) records it as timed out, releases
  its lock, names its state TimedOut, tells Slack and drafts its postmortem.
"""
from __future__ import annotations

import datetime as dt
import logging
from datetime import timedelta

from mq_runbooks.kit import gateway, journal
from mq_runbooks.kit.gateway.names import RUN_TAG
from mq_runbooks.kit.records import Outcome

HEARTBEAT_S = 30  # Prefect's minimum
ZOMBIE_AFTER_S = 90  # three heartbeat periods: a kill is noticed 60-90 s later; a heartbeat may come 60 s late
AUTOMATION_NAME = "mq-runbooks: crash runs that stopped their heartbeats"
# How Prefect's worker and executor report a run whose process never started.
NEVER_STARTED = ("Failed to submit flow run to infrastructure", "Flow run could not start")
RESUBMIT_AT_MOST = 3


def automation_name(window_s: int | None = None) -> str:
    """One automation per window: a new window is a new automation beside the old one, never an update
    (Prefect gives an updated trigger a new id and so forgets what it had pending: a run killed just
    before the update would never be marked Crashed)."""
    return f"{AUTOMATION_NAME} ({ZOMBIE_AFTER_S if window_s is None else window_s}s)"


def ensure_zombie_automation() -> bool:
    """Create this window's automation when it is missing; delete the automations of other windows
    (an older or newer version's, or the one named without a window) once this one has watched longer
    than their window, so what they had pending is its too. True if it was created now."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    wanted = Automation(
        name=automation_name(),
        description="Marks a flow run Crashed when it sent no heartbeat (and reached no final state) for "
                    f"{ZOMBIE_AFTER_S}s: its process died. Created by mq-runbooks.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            # A run that suspends at its gate stops its heartbeats on purpose (it has no process).
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed", "prefect.flow-run.Suspended",
                    "prefect.flow-run.Paused", "prefect.flow-run.TimedOut", "prefect.flow-run.Rejected",
                    "prefect.flow-run.Refused"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_S),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {ZOMBIE_AFTER_S}s: the run's process died")],
    )
    with gateway.connect() as client:
        found = sorted((a for a in client.read_automations() if a["name"].startswith(AUTOMATION_NAME)),
                       key=lambda a: a["created"])
        ours = [a for a in found if a["name"] == wanted.name]
        for duplicate in ours[1:]:  # two processes created it at once: the oldest has seen all the other has
            client.delete_automation(duplicate["id"])
        if not ours:
            client.create_automation(wanted)
            return True
        watching_s = (dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(ours[0]["created"])).total_seconds()
        for other in found:
            if other["name"] != wanted.name and watching_s > _window_s(other) + HEARTBEAT_S:
                client.delete_automation(other["id"])
    return False


def _window_s(automation: dict) -> float:
    from pydantic import TypeAdapter

    return TypeAdapter(timedelta).validate_python(automation["trigger"]["within"]).total_seconds()


def steps_applied(entries: list[journal.Entry]) -> list[str]:
    return [entry.summary for entry in entries if entry.kind == "action"]


def restore_if_suspended(run_id: str) -> bool:
    """Undo a crash the automation gave a run that was waiting suspended at its gate (it has no
    process, so no heartbeats, on purpose; the server's trigger can still fire on it): its Suspended
    state is set again, with its answer keys and deadline. True if it was one."""
    from uuid import UUID

    with gateway.connect() as client:
        history = sorted(client.read_flow_run_states(UUID(str(run_id))), key=lambda state: state.timestamp)
        if len(history) < 2 or not history[-1].is_crashed() or not history[-2].is_paused():
            return False
        waiting = history[-2]
        again = type(waiting)(type=waiting.type, name=waiting.name, message=waiting.message,
                              state_details=waiting.state_details)
        client.set_flow_run_state(UUID(str(run_id)), again, force=True)
    logging.getLogger("runbook.crashes").info("run %s waits at its gate (no process on purpose): not crashed", run_id)
    return True


def never_started(message: str) -> bool:
    """Whether a crash's message says the run's process never started."""
    return message.startswith(NEVER_STARTED)


def resubmit_if_never_started(run_id: str, message: str) -> bool:
    """Make a run of a work pool due again when it crashed before its process started (at most
    RESUBMIT_AT_MOST crashes; with the name of the Scheduled state it had, e.g. Resuming after its
    gate was answered). True if it was one."""
    from uuid import UUID

    from prefect.states import Scheduled

    if not never_started(message):
        return False
    with gateway.connect() as client:
        flow_run = client.read_flow_run(UUID(str(run_id)))
        history = sorted(client.read_flow_run_states(UUID(str(run_id))), key=lambda state: state.timestamp)
        if not flow_run.work_pool_name or sum(state.is_crashed() for state in history) > RESUBMIT_AT_MOST:
            return False
        due = next((state.name for state in reversed(history) if state.is_scheduled()), "Scheduled")
        client.set_flow_run_state(UUID(str(run_id)), Scheduled(name=due, message=f"due again: {message}"), force=True)
    logging.getLogger("runbook.crashes").warning("run %s never started (%s): it is due again", run_id, message)
    return True


def conclude(run_id: str, message: str) -> bool:
    """Record the outcome of one crashed run (once) and draft its postmortem; True if it was concluded now."""
    from mq_runbooks.kit.steps import publish_postmortem

    if restore_if_suspended(run_id) or resubmit_if_never_started(run_id, message):
        return False
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
    _slack_thread_of(run_id, entries)  # the outcome below then goes to the run's Slack thread too
    journal.write(run_id, Outcome(outcome="crashed", summary=f"crashed {what} ({message})", changed=applied,
                                  data={"restore_command": restore}))
    release_lock(entries)
    publish_postmortem(run_id)
    return True


def release_lock(entries: list[journal.Entry]) -> None:
    """Free the lock a run that ended without its process held (its lease, from its journal)."""
    from mq_runbooks.kit.lock import release

    held = journal.last(entries, "lock")
    if held is not None and held.data.get("lease_id"):
        release(held.data["lease_id"])


def _slack_thread_of(run_id: str, entries: list[journal.Entry]):
    """The run's Slack messages (an observer listening to its journal from now on), from its journal."""
    from mq_runbooks.base.settings import Settings
    from mq_runbooks.kit.notify import observer_for

    start = journal.last(entries, "parameters")
    started = start.data if start else {}
    runbook = started.get("runbook", "?")
    request = journal.last(entries, "approval_requested")
    observer = observer_for(Settings.from_environ(), run_id, runbook, runbook, started.get("requested_by", "unknown"),
                            started.get("trigger"))
    observer.resumed(entries, "", request.data.get("plan_digest", "") if request else "", "")
    return observer


def conclude_expired(run_id: str) -> bool:
    """Record a run whose gate's deadline passed while it was suspended (the Prefect server failed it)
    as timed out: journal, lock, state TimedOut, Slack, postmortem, one INFO line. True if concluded now."""
    from mq_runbooks.kit.endings import timed_out_state
    from mq_runbooks.kit.labels import WAITS_FOR, label
    from mq_runbooks.kit.gate import record_timeout
    from mq_runbooks.kit.steps import publish_postmortem

    entries = journal.read(run_id)
    request = journal.last(entries, "approval_requested")
    if journal.last(entries, "outcome") is not None or request is None:
        return False
    timeout_s = float(request.data.get("timeout_s") or 0)
    observer = _slack_thread_of(run_id, entries)
    record_timeout(run_id, timeout_s, gate=request.data.get("gate"))
    observer.timed_out(timeout_s)
    summary = "timed out; nothing was changed"
    journal.write(run_id, Outcome(outcome="rejected", summary=summary))
    label(run_id, remove=[WAITS_FOR])
    release_lock(entries)
    with gateway.connect() as client:
        # The same final state as a gate that timed out in its process (kit/endings.py).
        client.set_flow_run_state(run_id, timed_out_state(f"nobody approved within {timeout_s:.0f}s: {summary}"),
                                  force=True)
    publish_postmortem(run_id)
    logging.getLogger("runbook.gate").info("run %s timed out: nobody answered within %.0fs; nothing was changed",
                                           run_id, timeout_s)
    return True


def recent_expired(since: dt.timedelta = dt.timedelta(days=2), limit: int = 200) -> list[str]:
    """Recent runs of ours that the Prefect server failed because their gate's deadline passed."""
    from mq_runbooks.kit.gateway.names import PAUSE_EXPIRED

    with gateway.connect() as client:
        failed = client.read_flow_runs(tags=[RUN_TAG], state_names=["Failed"], sort="start_time_desc", limit=limit,
                                       started_after=dt.datetime.now(dt.timezone.utc) - since)
    return [str(run.id) for run in failed if run.state and run.state.message == PAUSE_EXPIRED]


def recent_crashed(since: dt.timedelta = dt.timedelta(days=2), limit: int = 200) -> dict[str, str]:
    """Recently crashed runs of ours: id -> the state's message."""
    from prefect.client.schemas.objects import StateType

    with gateway.connect() as client:
        crashed = client.read_flow_runs(tags=[RUN_TAG], state_types=[StateType.CRASHED], limit=limit,
                                        started_after=dt.datetime.now(dt.timezone.utc) - since)
    return {str(run.id): (run.state.message if run.state else None) or "Crashed" for run in crashed}


def conclude_crashed(crashed: dict[str, str] | None = None) -> list[str]:
    """Conclude every recently crashed run of ours that has no outcome yet; the ids concluded now."""
    crashed = recent_crashed() if crashed is None else crashed
    concluded = []
    for run_id, message in crashed.items():
        try:
            if conclude(run_id, message):
                concluded.append(run_id)
        except Exception as exc:  # noqa: BLE001  (one run that cannot be concluded must not block the others)
            logging.getLogger("runbook.crashes").warning("concluding crashed run %s failed: %s: %s",
                                                         run_id, type(exc).__name__, exc)
    return concluded
