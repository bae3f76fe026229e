"""Why a run does not move: `runbook status` and `runbook runs` say it, never just "Pending".

A run is stuck when
- it was due more than STUCK_AFTER_S ago and nothing started it (Scheduled, Late, Pending): nothing
  polls its deployment (no `runbook serve`, no worker of its pool), or the executor `runbook run`
  started for it failed (its log under run-logs/ says why) or never started;
- it runs but waits for its target's lock, which another run holds (runs carry the tag `lock:<key>`;
  a run records `lock` in its journal once it holds it).

    reason = why_stuck(settings, view)     # None, or one line: what, since when, and why
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound

from mq_runbooks.app.runs import RunView, run_log_path
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import gateway, journal
from mq_runbooks.kit.gateway.names import RESUMING
from mq_runbooks.kit.lock import holders

STUCK_AFTER_S = 60.0  # a due run not started by then was not picked up (a runner polls every few seconds)
NOT_STARTED = {"SCHEDULED", "PENDING"}


def why_stuck(settings: Settings, view: RunView, now: dt.datetime | None = None,
              after_s: float = STUCK_AFTER_S) -> str | None:
    """One line saying why `view` does not move, or None when it moves (or has ended)."""
    if view.finished or view.state_type not in NOT_STARTED | {"RUNNING"}:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    if view.state_type == "RUNNING":
        return _waiting_for_lock(view, now)
    with gateway.connect() as client:
        try:
            flow_run = client.read_flow_run(UUID(view.id))
        except ObjectNotFound:  # deleted since it was listed
            return None
        since = _due(flow_run)
        if since is None or (now - since).total_seconds() < after_s:
            return None
        if view.state_type == "PENDING":
            why = "it was taken but its flow never began"
            return f"{view.state} since {_at(since, now)}: {why}; {_executor_log(settings, view.id)}"
        pickup = _pickup(client, settings, flow_run, now)
        return f"{view.state}: due since {_at(since, now)} and not picked up: {pickup}"


def why_stuck_all(settings: Settings, views: Iterable[RunView]) -> dict[str, str]:
    """why_stuck for each run that has not ended, by run id (only the stuck ones)."""
    now = dt.datetime.now(dt.timezone.utc)
    found = {}
    for view in views:
        reason = why_stuck(settings, view, now)
        if reason:
            found[view.id] = reason
    return found


def _due(flow_run: FlowRun) -> dt.datetime | None:
    """Since when the run should have started: its scheduled time, or when it went Pending."""
    state = flow_run.state
    if state is None:
        return None
    if state.is_pending():
        return state.timestamp
    return state.state_details.scheduled_time or flow_run.expected_start_time or flow_run.created


def _pickup(client, settings: Settings, flow_run: FlowRun, now: dt.datetime) -> str:
    """Who should start this run, and why they did not."""
    if flow_run.deployment_id is None:
        return (f"it has no deployment, so only the executor `runbook run` starts for it can run it; "
                f"{_executor_log(settings, str(flow_run.id))}")
    deployment = client.read_deployment(flow_run.deployment_id)
    if deployment.work_pool_name:
        workers = client.read_workers(deployment.work_pool_name)
        online = [w for w in workers if w.status.value == "ONLINE"]
        if not online:
            last = max((w.last_heartbeat_time for w in workers if w.last_heartbeat_time), default=None)
            seen = f"the last one was seen {_at(last, now)}" if last else "none has ever started"
            return (f"no worker of work pool {deployment.work_pool_name!r} is online ({seen}); start one: "
                    f"runbook serve, or runbook worker (RUNBOOK_WORK_POOL={deployment.work_pool_name})")
        return (f"{len(online)} worker(s) of work pool {deployment.work_pool_name!r} are online but did not "
                f"take it: they may be at their limit of concurrent runs")
    # A deployment in no pool (`<runbook>/local`): `runbook run` executes it on the machine it was typed on.
    if run_log_path(settings, str(flow_run.id)).is_file():
        return _executor_log(settings, str(flow_run.id))
    if flow_run.state is not None and flow_run.state.name == RESUMING:
        return ("it was answered (e.g. in the Prefect UI) and waits for its executor: `runbook serve`'s sweep "
                "starts it within 30 s, so start `runbook serve`, or answer with `runbook approve` where it was started")
    return ("it runs on the machine where `runbook run` started it, and no executor started here; "
            "look there (run-logs/) or cancel it: runbook cancel " + str(flow_run.id))


def _executor_log(settings: Settings, run_id: str) -> str:
    path = run_log_path(settings, run_id)
    if not path.is_file():
        return f"no executor log at {path}: its executor never started (or ran on another machine)"
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not lines:
        return f"its executor wrote nothing ({path})"
    return f"its executor's log ({path}) ends: {lines[-1][:300]}"


def _waiting_for_lock(view: RunView, now: dt.datetime) -> str | None:
    """A running run that has started but holds no lock yet, while another run holds it."""
    if not view.lock:
        return None
    entries = view.entries or journal.read(view.id)
    started = journal.last(entries, "parameters")
    if started is None or any(e.kind in ("lock", "plan", "outcome") for e in entries):
        return None
    held_by = holders(view.lock, exclude=view.id)
    if not held_by:
        return None
    return f"waiting since {_at(started.at, now)} for the lock {view.lock!r}, held by {', '.join(held_by)}"


def _at(when: dt.datetime, now: dt.datetime) -> str:
    """`23:40:01 UTC (2m 10s ago)`."""
    seconds = max(0, int((now - when).total_seconds()))
    ago = f"{seconds // 3600}h {seconds % 3600 // 60}m" if seconds >= 3600 else (
        f"{seconds // 60}m {seconds % 60}s" if seconds >= 60 else f"{seconds}s")
    return f"{when.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC ({ago} ago)"


__all__ = ["STUCK_AFTER_S", "why_stuck", "why_stuck_all"]
