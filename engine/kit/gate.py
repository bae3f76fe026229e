"""The approval gate every risky step passes: the flow pauses with a typed input and the plan as
Markdown (what the Prefect UI's resume dialog shows), and goes on only with the approvals its
runbook's policy asks for.

The policy is enforced here, in the flow, whichever path the answer came by (CLI, Slack, Prefect
UI): an answer from someone who may not approve is recorded as refused and the gate waits on.
`runbook approve` checks the same policy first, so a person hears at once why they were refused.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from prefect import pause_flow_run
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput

from mq_runbooks.base.catalog import ApprovalPolicy
from mq_runbooks.kit import journal
from mq_runbooks.kit.identity import proof_kind, verify_answer
from mq_runbooks.kit.notify import GateObserver

# The default (10 s) would make every approval feel slow; 1 s resumes in about a second.
POLL_INTERVAL_S = 1


class Approval(RunInput):
    """What an approver sends: approve or reject, who, why, and the plan they saw."""

    approved: bool
    by: str
    comment: str = ""
    plan_digest: str = ""  # empty (e.g. from the Prefect UI) means "the plan shown in this dialog"
    proof: str = ""  # "token:<personal token>" proves who answers (kit/identity.py); empty: a typed name


@dataclass(frozen=True)
class Decision:
    approved: bool
    by: tuple[str, ...]  # who approved, or who rejected ("timeout" when nobody answered)
    comment: str
    timed_out: bool = False


def expand_approvers(approvers: list[str], teams: Mapping[str, list[str]]) -> set[str]:
    """People named directly plus the members of each @team."""
    people: set[str] = set()
    for approver in approvers:
        if approver.startswith("@"):
            people.update(teams.get(approver[1:], []))
        else:
            people.add(approver)
    return people


def refusal(policy: ApprovalPolicy, teams: Mapping[str, list[str]], requester: str, by: str,
            approved: bool, approved_by: list[str]) -> str | None:
    """Why `by` may not give this answer, or None if they may."""
    allowed = expand_approvers(policy.approvers, teams)
    if not approved and by == requester:
        return None  # whoever started a run may always stop it
    if by not in allowed:
        return f"{by} is not an approver (approvers: {', '.join(policy.approvers)})"
    if approved and by == requester and not policy.self_approval:
        return f"{by} started this run and may not approve it (the runbook does not allow self-approval)"
    if approved and by in approved_by:
        return f"{by} has already approved; {policy.required - len(approved_by)} more approval(s) needed from others"
    return None


def wait_for_approval(*, flow_run_id: str, runbook_id: str, policy: ApprovalPolicy, teams: Mapping[str, list[str]],
                      requester: str, plan_markdown: str, plan_digest: str,
                      observer: GateObserver | None = None) -> Decision:
    """Pause until the policy is met, someone allowed rejects, or the policy's timeout passes."""
    observer = observer or GateObserver()
    deadline = time.monotonic() + policy.timeout
    approved_by: list[str] = []
    comments: list[str] = []
    journal.record(
        flow_run_id, "approval_requested",
        f"waiting for {policy.required} approval(s) from {', '.join(policy.approvers)}",
        runbook=runbook_id, approvers=policy.approvers, required=policy.required,
        self_approval=policy.self_approval, timeout_s=policy.timeout, requester=requester,
        plan_digest=plan_digest,
    )
    observer.requested(plan_markdown, plan_digest, _policy_text(policy))
    while True:
        remaining = deadline - time.monotonic()
        if remaining < 1:
            observer.timed_out(policy.timeout)
            return _timed_out(flow_run_id, policy)
        description = _dialog(runbook_id, plan_markdown, plan_digest, policy, approved_by)
        form = Approval.with_initial_data(description=description, approved=True, by="", comment="",
                                          plan_digest=plan_digest)
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=math.ceil(remaining),
                                    poll_interval=POLL_INTERVAL_S, key=f"approval-{time.time_ns()}")
        except FlowPauseTimeout:
            observer.timed_out(policy.timeout)
            return _timed_out(flow_run_id, policy)
        by, reason = verify_answer(answer.by, answer.proof, teams)  # the proof decides who answered
        reason = reason or refusal(policy, teams, requester, by, answer.approved, approved_by)
        if reason is None and answer.plan_digest and answer.plan_digest != plan_digest:
            reason = "the answer was for another version of the plan; look at the current plan and answer again"
        if reason:
            journal.record(flow_run_id, "approval_refused", reason, by=by, approved=answer.approved,
                           proof=proof_kind(answer.proof))
            continue
        if not answer.approved:
            journal.record(flow_run_id, "rejection", f"rejected by {by}: {answer.comment or 'no reason given'}",
                           by=by, comment=answer.comment, proof=proof_kind(answer.proof))
            observer.decided(False, [by], answer.comment)
            return Decision(False, (by,), answer.comment)
        approved_by.append(by)
        comments.append(answer.comment)
        journal.record(flow_run_id, "approval", f"approved by {by}" + (f": {answer.comment}" if answer.comment else ""),
                       by=by, comment=answer.comment, plan_digest=plan_digest,
                       approvals=len(approved_by), required=policy.required, proof=proof_kind(answer.proof))
        if len(approved_by) >= policy.required:
            observer.decided(True, approved_by, "; ".join(c for c in comments if c))
            return Decision(True, tuple(approved_by), "; ".join(c for c in comments if c))
        observer.approved_so_far(approved_by)


def _policy_text(policy: ApprovalPolicy) -> str:
    return (f"{policy.required} of {', '.join(policy.approvers)}"
            + ("" if policy.self_approval else "; not the requester"))


def _timed_out(flow_run_id: str, policy: ApprovalPolicy) -> Decision:
    journal.record(flow_run_id, "rejection", f"nobody approved within {policy.timeout:.0f}s: rejected by timeout",
                   by="timeout", timeout_s=policy.timeout)
    return Decision(False, ("timeout",), "approval timed out", timed_out=True)


def _dialog(runbook_id: str, plan_markdown: str, digest: str, policy: ApprovalPolicy, approved_by: list[str]) -> str:
    so_far = f"Approved so far by {', '.join(approved_by)}. " if approved_by else ""
    return (
        f"## Approve `{runbook_id}`?\n\n{plan_markdown}\n\n"
        f"{so_far}Needs {policy.required} approval(s) from {', '.join(policy.approvers)}. "
        f"Plan `{digest[:12]}`. Set **by** to your name; set **approved** to false to reject "
        f"(say why in **comment**)."
    )
