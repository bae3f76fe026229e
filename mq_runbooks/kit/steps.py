"""What the driver (kit/driver.py) does the same way for every runbook around its gate: ask for
approval of a plan that must still hold when the approval arrives, say how a declined gate ended,
and publish the run's postmortem draft.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect.states import Failed, State

from mq_runbooks.base.catalog import Runbook
from mq_runbooks.kit import journal
from mq_runbooks.kit.endings import declined_state
from mq_runbooks.kit.gate import wait_for_approval
from mq_runbooks.kit.notify import observer_for
from mq_runbooks.kit.plans import Plan, PlanChanges, compare
from mq_runbooks.kit.prefect_port import PREFECT, publish_postmortem  # noqa: F401  (crashes, runs, restores call it here)
from mq_runbooks.kit.records import Note, Outcome
from mq_runbooks.kit.run_port import RunPort
from mq_runbooks.kit.runtime import RunContext

MAX_REPLANS = 3  # a plan that keeps changing under us is a reason to stop, not to loop


P = TypeVar("P", bound=Plan)


def approve_stable_plan(*, run_id: str, context: RunContext, runbook: Runbook, requested_by: str, plan: P,
                        markdown: Callable[[P], str], replan: Callable[[], P],
                        record_plan: Callable[..., None],
                        trigger: dict[str, Any] | None = None,
                        on_suspend: Callable[[float], None] | None = None,
                        port: RunPort = PREFECT) -> tuple[P | None, State | None]:
    """Ask for approval of `plan`; once approved, plan again and go on only if its intent still holds.

    The digest binds the intent (kit/plans.py): a re-plan whose observations moved by themselves is
    acted on, the drift journaled; a re-plan whose intent changed is recorded and asked again, the
    question showing the rows that differ from the approved plan (old -> new).

    Returns (the plan to act on, None), or (None, the final state) when it was rejected or timed out
    (kit/endings.py: Completed, named Rejected / TimedOut) or kept changing (Failed). Nothing is
    changed on the brokers here. The gate may suspend the run (its process leaves); the run executed
    again after an answer comes back here and replays the same rounds, each judged against the
    digest its journal says was asked (so an answer to the latest version is taken in one step)."""
    observer = observer_for(context.settings, run_id, runbook.id, runbook.title, requested_by, trigger)
    changes: PlanChanges | None = None  # how the plan asked differs from the one approved before
    for gate_round in range(1, MAX_REPLANS + 1):
        entries = port.read(run_id)
        asked = next((e for e in entries if e.kind == "approval_requested" and e.data.get("gate") == gate_round), None)
        asked_digest = asked.data.get("plan_digest") if asked is not None else None
        shown = markdown(plan) if changes is None else f"{changes.markdown()}\n\n{markdown(plan)}"
        decision = wait_for_approval(flow_run_id=run_id, runbook_id=runbook.id, policy=runbook.approval,
                                     teams=context.teams, requester=requested_by, plan_markdown=shown,
                                     plan_digest=asked_digest or plan.digest(), observer=observer,
                                     gate_round=gate_round, on_suspend=on_suspend, port=port)
        if not decision.approved:
            reason = (f"nobody answered within {runbook.approval.timeout:.0f}s" if decision.timed_out
                      else decision.comment)
            return None, rejected(run_id, decision.timed_out, decision.by, reason, port)
        entries = port.read(run_id)
        approved_digest = _approved_digest(entries, gate_round) or asked_digest or plan.digest()
        current = replan()
        columns, rows = _recorded_table(entries, approved_digest, plan)
        changes = compare(columns, rows, current)
        if current.digest() == approved_digest:
            _report_drift(run_id, entries, gate_round, changes, port)
            return current, None
        asked_again = any(e.kind == "approval_requested" and e.data.get("gate") == gate_round + 1 for e in entries)
        if not asked_again:  # (a run executed again after the next round asked has recorded this already)
            differs = changes.intent_lines()
            listed = "; ".join(differs[:10]) + (f"; ... and {len(differs) - 10} more" if len(differs) > 10 else "")
            port.write(run_id, Note(
                summary=f"the plan changed after approval (the target moved meanwhile): asking again; changed since "
                        f"the approved plan: {listed or 'its digest'}",
                data={"approved_digest": approved_digest, "current_digest": current.digest(), "changed": differs,
                      "drift": changes.drift_lines()}))
            port.logger().warning("the plan's intent changed since it was approved (%s); asking for approval "
                                     "again", listed)
            record_plan(current, changes.markdown(), changed_since_approval=differs, approved_digest=approved_digest)
        plan = current
    port.write(run_id, Outcome(outcome="failed",
                               summary=f"the plan kept changing ({MAX_REPLANS} times); nothing was changed"))
    return None, Failed(message="the plan kept changing while waiting for approval; nothing was changed")


def _approved_digest(entries: list[journal.Entry], gate_round: int) -> str | None:
    """The plan digest the approvals of a gate round were given for (the gate records it with each)."""
    approvals = [e for e in entries if e.kind == "approval" and e.data.get("gate") == gate_round]
    return approvals[-1].data.get("plan_digest") if approvals else None


def _recorded_table(entries: list[journal.Entry], digest: str, plan: Plan) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows of the plan with `digest` as the journal recorded it (what the approvers
    saw), else those of `plan`."""
    recorded = [e for e in entries if e.kind == "plan" and e.data.get("digest") == digest]
    if recorded:
        return list(recorded[-1].data.get("columns") or []), list(recorded[-1].data.get("rows") or [])
    return list(plan.columns()), [list(row) for row in plan.rows()]


def _report_drift(run_id: str, entries: list[journal.Entry], gate_round: int, changes: PlanChanges,
                  port: RunPort = PREFECT) -> None:
    """Observations that moved by themselves since the approved plan: a journal line and a log line,
    once per gate round; not a reason to ask again. (The digests are equal here, so whatever else
    differs, e.g. a column a runbook's own digest leaves out, is drift too.)"""
    drift = changes.intent_lines() + changes.drift_lines()
    if not drift or any(e.kind == "note" and e.data.get("drift_after_gate") == gate_round for e in entries):
        return
    listed = "; ".join(drift[:10]) + (f"; ... and {len(drift) - 10} more" if len(drift) > 10 else "")
    port.write(run_id, Note(summary=f"the approved plan still holds; observed since approval (drift, not a reason "
                                       f"to ask again): {listed}", data={"drift": drift, "drift_after_gate": gate_round}))
    port.logger().info("the approved plan still holds; drift since approval: %s", listed)


def rejected(run_id: str, timed_out: bool, by: tuple[str, ...] | list[str], reason: str,
             port: RunPort = PREFECT) -> State:
    """The outcome of a run whose gate said no (or timed out), in the journal; its final state
    (kit/endings.py)."""
    outcome = "timed out" if timed_out else f"rejected by {', '.join(by)}"
    port.write(run_id, Outcome(outcome="rejected", summary=f"{outcome}; nothing was changed"))
    return declined_state(run_id, f"{outcome}; nothing was changed", timed_out, reason, port.logger())
