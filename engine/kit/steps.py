"""Steps every runbook's flow takes the same way: record the start, ask for approval of a plan
that must still hold when the approval arrives, and make sure every failure ends in the journal.

A runbook flow reads like:

    run_id = str(flow_run.id)
    return guarded(run_id, lambda: body(run_id, ...))

    def body(...):
        context = RunContext.load(); runbook = context.catalog.get(RUNBOOK_ID)
        record_start(run_id, RUNBOOK_ID, params, requested_by, trigger, "what and where")
        with target_lock(runbook.lock_key(params), run_id, context.settings.lock_wait_s):
            plan = observe_and_plan(...)
            plan, refusal = approve_stable_plan(...)
            if refusal: return refusal
            snapshot -> act -> verify (restore the snapshot on failure) -> outcome
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from prefect import get_run_logger
from prefect.states import Failed, State
from pydantic import BaseModel

from mq_runbooks.base.catalog import Runbook
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal
from mq_runbooks.kit.endings import declined_state
from mq_runbooks.kit.gate import wait_for_approval
from mq_runbooks.kit.notify import observer_for
from mq_runbooks.kit.runtime import RunContext

MAX_REPLANS = 3  # a plan that keeps changing under us is a reason to stop, not to loop


class Plan(Protocol):
    def digest(self) -> str: ...


P = TypeVar("P", bound=Plan)


def record_start(run_id: str, runbook_id: str, params: BaseModel, requested_by: str,
                 trigger: dict[str, Any] | None, target: str) -> None:
    journal.record(run_id, "parameters", f"{runbook_id} on {target}, requested by {requested_by}",
                   runbook=runbook_id, parameters=params.model_dump(mode="json"), requested_by=requested_by,
                   trigger=trigger or {})


def guarded(run_id: str, body: Callable[[], Any]) -> Any:
    """Run the flow's body; a failure that the body did not already conclude is recorded as the
    outcome; whatever the outcome, the run's postmortem draft is written at the end."""
    try:
        return body()
    except Exception as exc:
        if journal.last(journal.read(run_id), "outcome") is None:
            journal.record(run_id, "error", f"{type(exc).__name__}: {exc}")
            journal.record(run_id, "outcome", f"failed before changing anything: {exc}", outcome="failed")
        raise
    finally:
        publish_postmortem(run_id)


def publish_postmortem(run_id: str) -> None:
    """Write the run's draft and say where to review it (in the journal, so in Slack's thread too);
    it is drafted again once Prefect has recorded the run's final state."""
    from mq_runbooks.kit.postmortem_publish import redraft_when_final, write_postmortem

    settings = Settings.from_environ()
    path = write_postmortem(run_id, settings)
    if path is not None:
        url = f"{settings.public_url.rstrip('/')}/postmortems/{path.stem}"
        journal.record(run_id, "postmortem", f"postmortem draft written: {url} ({path})", path=str(path), url=url)
    redraft_when_final()


def approve_stable_plan(*, run_id: str, context: RunContext, runbook: Runbook, requested_by: str, plan: P,
                        markdown: Callable[[P], str], replan: Callable[[], P],
                        record_plan: Callable[[P], None],
                        trigger: dict[str, Any] | None = None,
                        on_suspend: Callable[[float], None] | None = None) -> tuple[P | None, State | None]:
    """Ask for approval of `plan`; once approved, plan again and go on only if nothing changed.

    Returns (the approved plan, None), or (None, the final state) when it was rejected or timed out
    (kit/endings.py: Completed, named Rejected / TimedOut) or kept changing (Failed). Nothing is
    changed on the brokers here. The gate may suspend the run (its process
    leaves); the run executed again after an answer comes back here and replays the same rounds.
    """
    observer = observer_for(context.settings, run_id, runbook.id, runbook.title, requested_by, trigger)
    for gate_round in range(1, MAX_REPLANS + 1):
        decision = wait_for_approval(flow_run_id=run_id, runbook_id=runbook.id, policy=runbook.approval,
                                     teams=context.teams, requester=requested_by, plan_markdown=markdown(plan),
                                     plan_digest=plan.digest(), observer=observer, gate_round=gate_round,
                                     on_suspend=on_suspend)
        if not decision.approved:
            reason = (f"nobody answered within {runbook.approval.timeout:.0f}s" if decision.timed_out
                      else decision.comment)
            return None, rejected(run_id, decision.timed_out, decision.by, reason)
        current = replan()
        if current.digest() == plan.digest():
            return plan, None
        asked_again = any(e.kind == "approval_requested" and e.data.get("gate") == gate_round + 1
                          for e in journal.read(run_id))
        if not asked_again:  # (a run executed again after the next round asked has recorded this already)
            journal.record(run_id, "note", "the plan changed after approval (the target moved meanwhile): asking again",
                           approved_digest=plan.digest(), current_digest=current.digest())
            get_run_logger().warning("plan changed since it was approved; asking for approval again")
            record_plan(current)
        plan = current
    journal.record(run_id, "outcome", f"the plan kept changing ({MAX_REPLANS} times); nothing was changed",
                   outcome="failed")
    return None, Failed(message="the plan kept changing while waiting for approval; nothing was changed")


def rejected(run_id: str, timed_out: bool, by: tuple[str, ...] | list[str], reason: str) -> State:
    """The outcome of a run whose gate said no (or timed out), in the journal; its final state
    (kit/endings.py)."""
    outcome = "timed out" if timed_out else f"rejected by {', '.join(by)}"
    journal.record(run_id, "outcome", f"{outcome}; nothing was changed", outcome="rejected")
    return declined_state(run_id, f"{outcome}; nothing was changed", timed_out, reason)
