"""Undo as a run of its own: `runbook restore RUN` starts a new run of the same runbook, with the
same parameters, whose trigger names the run to restore (`{"restore_of": RUN}`). The driver hands
such a run to `drive_restore`, which does for the way back what it does for the way there:

    check   the run restored is of this runbook, with these parameters, has ended, and saved a snapshot
    lock    the same target lock (a restore never overlaps a run on its target)
    plan    the runbook's `restore_items`: each saved value against what is there now and what the run
            left (a value that moved since is said so), and what the runbook cannot undo
    gate    the runbook's own approvers, the plan's digest, asked again if it changes (kit/steps.py)
    act     the runbook's own `restore(run, params, None, snapshot)`, as a fenced step
    verify  every saved value read again equals the snapshot
    link    both journals name each other; the restored run's postmortem is drafted again with it

A restore takes no snapshot of its own: a restore of the restore is a restore of the original run
again. A runbook that has no `restore_items` is refused with its snapshot's command for people.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from pydantic import BaseModel

from mq_runbooks.base.errors import RunbookError
from mq_runbooks.kit import journal
from mq_runbooks.kit.lock import target_lock
from mq_runbooks.kit.records import Error, Lock, Note, Outcome, Snapshot, Verification
from mq_runbooks.kit.restore_plan import RESTORE_OF, RestorePlan, not_restorable, restore_of
from mq_runbooks.kit.steps import approve_stable_plan, publish_postmortem

P = TypeVar("P", bound=BaseModel)


class RestoreNotVerified(RunbookError):
    """A restore ran, but reading back shows values not as the snapshot saved them."""


# The driver's RunbookSteps and Run: the driver imports this module, so it does not import the driver.
RunbookSteps = Any
Run = Any


def saved_snapshot(entries: list[journal.Entry]) -> Snapshot | None:
    """The snapshot a run's journal holds (its structured data as the runbook saved it), or None."""
    entry = journal.last(entries, "snapshot")
    if entry is None:
        return None
    known = {"path", "csv", "restore_command"}
    return Snapshot(summary=entry.summary, path=entry.data.get("path"), csv=entry.data.get("csv") or "",
                    restore_command=entry.data.get("restore_command"),
                    data={key: value for key, value in entry.data.items() if key not in known})


def drive_restore(steps: RunbookSteps, run: Run, params: P, *, closing: Callable, record_plan: Callable,
                  transient: Callable) -> State:
    """A restore run from its checks to its outcome (see the module docstring). The driver passes its
    own `closing` (a step's clients closed when it returns), `record_plan` and `transient` (retry
    condition), so a restore's steps behave as a run's."""
    original_id = restore_of(run.trigger)
    assert original_id is not None and run.runbook is not None and run.context is not None
    original = journal.read(original_id)
    problem, snapshot = _check(steps, run, params, original_id, original)
    if problem is not None:
        return _refused(run, problem)
    assert snapshot is not None
    if journal.last(run.prior, "plan") is None:  # once, not again when resumed after its gate
        journal.write(original_id, Note(summary=f"restore requested by {run.requested_by} as run {run.id}",
                                        data={"restored_by": run.id}))
    key = run.runbook.lock_key(params)
    held = journal.last(run.prior, "lock")
    adopt = held.data.get("lease_id") if held is not None else None
    suspended_for = [0.0]

    def observe() -> RestorePlan | None:
        items = task(name="observe-restore", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
                     retry_condition_fn=transient)(closing(run, steps.restore_items))(run, params, snapshot, original)
        if items is None:
            return None
        return RestorePlan(of_run=original_id, runbook=steps.id, target=steps.target(params), items=tuple(items),
                           cannot_undo=tuple(steps.cannot_undo), restore_command=snapshot.restore_command)

    with target_lock(key, run.id, run.settings.lock_wait_s, adopt=adopt,
                     suspended_for=lambda: suspended_for[0]) as lease:
        if adopt is None or str(lease.id) != str(adopt):
            journal.write(run.id, Lock(summary=f"holding lock {key}", key=key, lease_id=str(lease.id)))
        plan = observe()
        if plan is None:
            return _refused(run, not_restorable(steps.id, steps.cannot_undo, snapshot.restore_command))
        if journal.last(run.prior, "plan") is None:
            record_plan(run.id, plan)
        if not plan.changes_anything():
            return _unchanged(run, original_id, plan)
        approved, declined = approve_stable_plan(
            run_id=run.id, context=run.context, runbook=run.runbook, requested_by=run.requested_by, plan=plan,
            markdown=lambda p: p.markdown(), replan=observe,
            record_plan=lambda changed, preface="", **data: record_plan(run.id, changed, preface, **data),
            trigger=run.trigger, on_suspend=lambda seconds: suspended_for.__setitem__(0, seconds))
        if declined is not None:
            return declined
        if not approved.changes_anything():
            return _unchanged(run, original_id, approved)
        return _put_back(steps, run, params, snapshot, approved, observe, closing)


def _check(steps: RunbookSteps, run: Run, params: BaseModel, original_id: str,
           original: list[journal.Entry]) -> tuple[str | None, Snapshot | None]:
    """Why this restore must not go on (or None), and the snapshot it restores."""
    start = journal.last(original, "parameters")
    if start is None:
        return f"run {original_id} has no journal: it is not a run of a runbook", None
    if start.data.get("runbook") != steps.id:
        return f"run {original_id} is a run of {start.data.get('runbook')}, not {steps.id}", None
    if restore_of(start.data.get("trigger")):
        return (f"run {original_id} is itself a restore (of run {restore_of(start.data.get('trigger'))}): restore "
                f"that run again instead"), None
    if start.data.get("parameters") != params.model_dump(mode="json"):
        return f"the parameters are not those of run {original_id} (a restore acts on the run's own target)", None
    if journal.last(original, "outcome") is None:
        return f"run {original_id} has not ended yet: wait for its outcome (runbook status {original_id})", None
    snapshot = saved_snapshot(original)
    if snapshot is None:
        return f"run {original_id} saved no snapshot (it changed nothing, or its runbook keeps none)", None
    return None, snapshot


def _put_back(steps: RunbookSteps, run: Run, params: P, snapshot: Snapshot, plan: RestorePlan,
              observe: Callable[[], RestorePlan], closing: Callable) -> State:
    original_id = plan.of_run
    try:
        restored = run.step("restore-snapshot", lambda: closing(run, steps.restore)(run, params, None, snapshot),
                            lambda r: r.summary if r is not None else "nothing was restored",
                            lambda r: dict(r.data) if r is not None else {}, partial=True)
        check = task(name="verify-restore", cache_policy=NO_CACHE)(observe)
        now = check()
        for _ in range(steps.verify_attempts - 1):
            if not plan.not_restored(now.items):
                break
            time.sleep(steps.verify_delay_s)
            now = check()
        wrong = plan.not_restored(now.items)
        journal.write(run.id, Verification(
            ok=not wrong, summary=("read back: " + "; ".join(wrong[:20])) if wrong else
            f"read back {len(now.items)} saved value(s): all as the snapshot saved them",
            data={"checked": len(now.items), "not_restored": wrong}))
        if wrong:
            raise RestoreNotVerified(f"the restore did not take: {'; '.join(wrong[:5])}")
    except Exception as exc:
        journal.write(run.id, Error(summary=f"{type(exc).__name__}: {exc}"))
        by_hand = snapshot.restore_command or "no command was saved"
        summary = (f"restore of run {original_id} failed after changing: {'; '.join(run.changed)} ({exc}); finish "
                   f"by hand: {by_hand}") if run.changed else f"restore of run {original_id} failed before " \
                                                            f"changing anything: {exc}"
        _end(run, "failed", summary, run.changed)
        _link(original_id, run, f"restore run {run.id} failed: {exc}")
        raise
    summary = (f"restored the snapshot of run {original_id}: {restored.summary if restored else 'done earlier'}"
               + (f"; cannot be undone: {'; '.join(plan.cannot_undo)}" if plan.cannot_undo else ""))
    _end(run, "succeeded", summary, run.changed, restored=len(plan.rows()))
    _link(original_id, run, f"restored by run {run.id} (requested by {run.requested_by}): "
                            f"{restored.summary if restored else 'done'}")
    return Completed(message=summary)


def _refused(run: Run, problem: str) -> State:
    message = f"refused: {problem}; nothing was changed"
    _end(run, "refused", message)
    return Failed(message=message, name="Refused")


def _unchanged(run: Run, original_id: str, plan: RestorePlan) -> State:
    message = f"nothing to restore: every value the snapshot of run {original_id} saved is in place ({plan.summary()})"
    _end(run, "unchanged", message)
    return Completed(message=message)


def _end(run: Run, outcome: str, summary: str, changed: list[str] | None = None, **data: Any) -> None:
    journal.write(run.id, Outcome(outcome=outcome, summary=summary, changed=changed or [],
                                  data={RESTORE_OF: restore_of(run.trigger), **data}))


def _link(original_id: str, run: Run, summary: str) -> None:
    """The restored run's journal names its restore, and its postmortem is drafted again with it."""
    journal.write(original_id, Note(summary=summary, data={"restored_by": run.id}))
    publish_postmortem(original_id)


__all__ = ["drive_restore", "saved_snapshot"]
