"""`runbook restore RUN`, from outside the flow: what a restore of a run would put back, and starting
one. A restore is a new run of the same runbook with the run's own parameters and a trigger that
names the run (kit/restore.py drives it: plan, the runbook's approvers, the same lock, the runbook's
own restore, verify, journal). The CLI, serve's API and Slack are thin edges over these functions.

    request = restore_request(catalog, "3f2a9c")     # UsageError (exit 2) naming why not
    plan = restore_preview(request, clusters, settings)  # the diff, changing nothing
    run_id = start_restore(request, start=..., requested_by="alice", source="cli")
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mq_runbooks.base.catalog import Catalog, Runbook
from mq_runbooks.base.clusters import Clusters
from mq_runbooks.base.errors import UsageError
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal
from mq_runbooks.kit.conformance import steps_of
from mq_runbooks.kit.driver import Env, RunbookSteps
from mq_runbooks.kit.restore import saved_snapshot
from mq_runbooks.kit.restore_plan import RESTORE_OF, RestorePlan, not_restorable, restore_of
from mq_runbooks.kit.records import Snapshot


@dataclass(frozen=True)
class RestoreRequest:
    """A run that can be restored: its runbook, its parameters and its snapshot."""

    run_id: str
    runbook: Runbook
    steps: RunbookSteps
    params: BaseModel
    snapshot: Snapshot
    entries: list[journal.Entry]


def restore_request(catalog: Catalog, reference: str) -> RestoreRequest:
    """The run `reference` names, checked to be restorable; UsageError (exit 2) saying why not."""
    from mq_runbooks.app import runs

    view = runs.read_run(reference)
    start = journal.last(view.entries, "parameters")
    if start is None:
        raise UsageError(f"run {view.id} has no journal of a runbook run: nothing to restore")
    if restore_of(start.data.get("trigger")):
        original = restore_of(start.data.get("trigger"))
        raise UsageError(f"run {view.id} is a restore of run {original}: it keeps no snapshot of its own; to put "
                         f"back what run {original} saved again: runbook restore {original}")
    outcome = journal.last(view.entries, "outcome")
    if outcome is None:
        raise UsageError(f"run {view.id} has not ended (its state is {view.state}): a restore puts back what an ended "
                         f"run changed; wait for its outcome, or reject or cancel it")
    snapshot = saved_snapshot(view.entries)
    if snapshot is None:
        raise UsageError(f"run {view.id} saved no snapshot (its outcome: {outcome.summary}): nothing to restore")
    runbook = catalog.get(str(start.data.get("runbook")))
    steps = steps_of(runbook)
    if steps is None or type(steps).restore_items is RunbookSteps.restore_items:
        raise UsageError(not_restorable(runbook.id, steps.cannot_undo if steps is not None else (),
                                        snapshot.restore_command))
    params = runbook.validate_parameters(start.data.get("parameters") or {})
    return RestoreRequest(view.id, runbook, steps, params, snapshot, view.entries)


def restore_preview(request: RestoreRequest, clusters: Clusters, settings: Settings) -> RestorePlan:
    """The restore's plan as it would be now (`runbook restore RUN --plan`): changes nothing."""
    env = Env(settings, clusters)
    try:
        items = request.steps.restore_items(env, request.params, request.snapshot, request.entries)
    finally:
        env.close_clients()
    return RestorePlan(of_run=request.run_id, runbook=request.runbook.id, target=request.steps.target(request.params),
                       items=tuple(items or ()), cannot_undo=tuple(request.steps.cannot_undo),
                       restore_command=request.snapshot.restore_command)


def restore_trigger(request: RestoreRequest, source: str, **more: Any) -> dict[str, Any]:
    """The trigger of a restore run: where it was asked from, and the run it restores."""
    return {"source": source, **more, RESTORE_OF: request.run_id}


def start_restore(settings: Settings, request: RestoreRequest, requested_by: str, source: str = "cli",
                  start: Callable[..., Any] | None = None, **more: Any) -> str:
    """Start the restore run (starts.start_run, or serve's `start`); its id."""
    from mq_runbooks.app import starts

    trigger = restore_trigger(request, source, **more)
    if start is None:
        return starts.start_run(settings, request.runbook, request.params, requested_by=requested_by, trigger=trigger)
    run_id, _ = start(request.runbook, request.params, requested_by, trigger)
    return run_id
