"""The approval gate every risky step passes. The run suspends with a typed input and the plan as
Markdown (what the Prefect UI's resume dialog shows): its process exits, and nothing (no process, no
runner or worker slot) waits for the answer. An answer resumes the run; a runner or worker executes
it again from the top, and the gate replays what the journal already holds, so each answer is judged
and recorded once however often the run is executed.

Whoever judges an answer (`runbook approve|reject` in direct mode, `runbook serve` for Slack) checks
who gives it and signs it with the engine's key (kit/signing.py: run, suspension key, decision, who,
the kind of proof checked, plan digest, comment). The gate acts on no answer that is not signed so,
whatever path it took: a resume through the Prefect API or UI, which anyone holding the Prefect
credential can send with any `proof` in it, is recorded as refused and the gate waits on. The kind
of proof is read from the signed answer, never from an unsigned field, and the gate checks it again
against RUNBOOK_APPROVAL_PROOF and the policy, in the run: an answer from someone who may not
approve is recorded as refused, shown in the run's state message and logs, and the gate waits on.

The deadline needs no process either: the suspended state carries it, the Prefect server fails the
run when it passes, and whoever sweeps (serve, `runbook status`) concludes it as timed out
(kit/crashes.py).

Replay: gate round `r` (a plan put to approval; a plan that changed after approval is round r+1)
asks with suspension keys `gate-r-1`, `gate-r-2`, ...; every journal entry of the gate names its round
and its key, so a re-executed run reads its answers from the journal instead of asking again.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from prefect.input import RunInput
from pydantic import ConfigDict, Field

from mq_runbooks.base.catalog import ApprovalPolicy
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal, records
from mq_runbooks.kit.gateway.names import PAUSE_EXPIRED  # noqa: F401  (the server's message at a gate's deadline)
from mq_runbooks.kit.identity import canonical_person, kind_refusal
from mq_runbooks.kit.labels import WAITS_FOR, waits_for_tag
from mq_runbooks.kit.notify import GateObserver
from mq_runbooks.kit.prefect_port import PREFECT, suspend_for_answer  # noqa: F401  (the gate's Prefect side)
from mq_runbooks.kit.run_port import RunPort
from mq_runbooks.kit.signing import sign, signing_key, verify
from mq_runbooks.kit.teams import load_people, person_of


# The judge's fields: in every answer, never typed by a person, so out of the resume form.
_JUDGE_FIELDS = ("proof", "plan_digest", "signature")


def _form_schema(schema: dict) -> None:
    """The schema Prefect's resume form is drawn from: the fields a person reads (decision, by,
    comment, described); the judge's fields are still allowed in an answer (patternProperties, so the
    server's check of an answer against this schema keeps refusing any other field)."""
    properties = schema.get("properties", {})
    hidden = {name: properties.pop(name) for name in _JUDGE_FIELDS if name in properties}
    if hidden:
        schema["patternProperties"] = {f"^{name}$": {"type": "string"} for name in hidden}


class Approval(RunInput):
    """An answer as its judge sends it: a decision (no default: an empty form is refused), who, why,
    the plan they saw, the kind of proof the judge checked, and the judge's signature over all of it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_form_schema)

    decision: Literal["approve", "reject"] = Field(
        description="approve or reject the plan shown above. Answer with `runbook approve|reject RUN` or in "
                    "Slack: an answer from this form is not signed by mq-runbooks and is refused.")
    by: str = Field(description="Who answers, as the runbook's approval policy knows them (proven by the CLI's "
                                "token, Slack or serve, never by this field alone).")
    proof: str = ""  # the kind of proof checked (kit/identity.py proof_kind), believed only when signed
    comment: str = Field("", description="Why: kept in the journal and the postmortem (a rejection needs one).")
    plan_digest: str = ""
    signature: str = ""  # the engine's HMAC over the answer (sign_answer); none: the answer is refused

    @property
    def approved(self) -> bool:
        return self.decision == "approve"


UNSIGNED = ("the answer is not signed by mq-runbooks: answer with `runbook approve|reject` or in Slack (a resume "
            "through the Prefect API or UI is not taken); if it was, serve, workers and the CLI do not share one "
            "RUNBOOK_SIGNING_KEY")


def _answer_fields(run_id: str, pause_key: str, decision: str, by: str, proof: str, plan_digest: str,
                   comment: str) -> dict[str, str]:
    return {"run": str(run_id), "key": pause_key, "decision": decision, "by": by, "proof": proof,
            "plan_digest": plan_digest, "comment": comment}


def sign_answer(key: bytes, run_id: str, pause_key: str, *, decision: str, by: str, proof: str, plan_digest: str,
                comment: str) -> dict[str, str]:
    """The run input of an answer a judge has checked: resume the run waiting at `pause_key` with it."""
    fields = _answer_fields(run_id, pause_key, decision, by, proof, plan_digest, comment)
    return {"decision": decision, "by": by, "proof": proof, "plan_digest": plan_digest, "comment": comment,
            "signature": sign(key, "answer", fields)}


def judge_answer(answer: Approval, run_id: str, pause_key: str, teams: Mapping[str, list[str]],
                 settings: Settings) -> tuple[str, str, str | None]:
    """(who answered, the kind of proof, why the answer is refused or None), as the run sees it: only
    a signed answer is believed, and its proof must be one RUNBOOK_APPROVAL_PROOF takes."""
    fields = _answer_fields(run_id, pause_key, answer.decision, answer.by, answer.proof, answer.plan_digest,
                            answer.comment)
    if not verify(signing_key(settings), "answer", fields, answer.signature):
        return answer.by.strip(), "unsigned", UNSIGNED
    people = [member for members in teams.values() for member in members]
    return canonical_person(answer.by, people), answer.proof, kind_refusal(answer.proof, settings.approval_proof)


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
            approved: bool, approved_by: list[str], people: Mapping[str, str] | None = None) -> str | None:
    """Why `by` may not give this answer, or None if they may. Names are compared as people
    (teams.yaml's `people:`: a name, a Slack user id and a proxy identity of one person are one)."""
    people = people or {}
    who = person_of(by, people)
    allowed = {person_of(name, people) for name in expand_approvers(policy.approvers, teams)}
    started = person_of(requester, people)
    if not approved and who == started:
        return None  # whoever started a run may always stop it
    if who not in allowed:
        return f"{by} is not an approver (approvers: {', '.join(policy.approvers)})"
    if approved and who == started and not policy.self_approval:
        same = "" if by == requester else f" (as {requester})"
        return (f"{by} started this run{same} and may not approve it (the runbook does not allow "
                "self-approval)")
    if approved and who in {person_of(name, people) for name in approved_by}:
        return f"{by} has already approved; {policy.required - len(approved_by)} more approval(s) needed from others"
    return None


def deadline_of(request: journal.Entry) -> dt.datetime:
    """When the gate that `request` opened times out."""
    return request.at + dt.timedelta(seconds=float(request.data.get("timeout_s") or 0))


def wait_for_approval(*, flow_run_id: str, runbook_id: str, policy: ApprovalPolicy, teams: Mapping[str, list[str]],
                      requester: str, plan_markdown: str, plan_digest: str,
                      observer: GateObserver | None = None, gate_round: int = 1,
                      on_suspend=None, port: RunPort = PREFECT) -> Decision:
    """Suspend until the policy is met, someone allowed rejects, or the policy's timeout passes.
    `on_suspend(seconds_left)` is called just before the run suspends (e.g. to keep its lock that long);
    the journal, the question and the run's tags go through `port` (kit/run_port.py)."""
    observer = observer or GateObserver()
    settings = Settings.from_environ()  # the run's own: its RUNBOOK_APPROVAL_PROOF and signing key
    people = load_people(settings.teams)
    entries = port.read(flow_run_id)
    mine = [e for e in entries if e.data.get("gate") == gate_round]
    request = next((e for e in mine if e.kind == "approval_requested"), None)
    if request is None:
        request = port.write(flow_run_id, records.ApprovalRequested(
            summary=f"waiting for {policy.required} approval(s) from {', '.join(policy.approvers)}",
            runbook=runbook_id, approvers=list(policy.approvers), required=policy.required,
            self_approval=policy.self_approval, timeout_s=policy.timeout, requester=requester,
            plan_digest=plan_digest, gate=gate_round,
        ))
        try:  # whom it waits for, as a tag Prefect's UI shows and filters by
            port.label(flow_run_id, add=[waits_for_tag(policy.approvers, policy.required)], remove=[WAITS_FOR])
        except Exception as exc:  # noqa: BLE001  (a label never stops the gate)
            port.logger().warning("could not tag the run with whom it waits for: %s", exc)
        observer.requested(plan_markdown, plan_digest, _policy_text(policy))
    else:
        observer.resumed(entries, plan_markdown, plan_digest, _policy_text(policy))
    answered = {e.data["answer"]: e for e in mine if "answer" in e.data}
    deadline = deadline_of(request)
    approved_by: list[str] = []
    comments: list[str] = []
    status = ""
    for number in range(1, 10_000):
        key = f"gate-{gate_round}-{number}"
        done = answered.get(key)
        if done is not None:  # judged in an earlier execution of this run: replayed, not asked again
            if done.kind == "rejection":
                return Decision(False, (done.data.get("by", "?"),), done.data.get("comment", ""),
                                timed_out=done.data.get("by") == "timeout")
            if done.kind == "approval":
                approved_by.append(done.data.get("by", "?"))
                comments.append(done.data.get("comment", ""))
                if len(approved_by) >= policy.required:
                    return Decision(True, tuple(approved_by), "; ".join(c for c in comments if c))
            continue
        remaining = (deadline - port.now()).total_seconds()
        if remaining < 1:
            observer.timed_out(policy.timeout)
            return _timed_out(flow_run_id, policy, gate_round, key, port)
        description = _dialog(runbook_id, plan_markdown, plan_digest, policy, approved_by, requester=requester,
                              deadline=deadline, run_id=flow_run_id, refused=status)
        form = Approval.with_initial_data(description=description, plan_digest=plan_digest)
        message = status or (f"waiting for {_policy_text(policy)}"
                             + (f"; approved so far by {', '.join(approved_by)}" if approved_by else ""))
        answer = port.ask(form, timeout=math.ceil(remaining), key=key, message=message, on_suspend=on_suspend)
        by, proof, reason = judge_answer(answer, flow_run_id, key, teams, settings)
        reason = reason or refusal(policy, teams, requester, by, answer.approved, approved_by, people)
        if reason is None and answer.plan_digest and answer.plan_digest != plan_digest:
            reason = "the answer was for another version of the plan; look at the current plan and answer again"
        if reason:
            port.write(flow_run_id, records.ApprovalRefused(
                summary=reason, by=by, data={"approved": answer.approved, "proof": proof, "gate": gate_round,
                                             "answer": key}))
            port.logger().warning("refused %s's answer: %s", by or "an unnamed", reason)
            status = f"refused {by or 'an unnamed'}'s answer: {reason}; still waiting for {_policy_text(policy)}"
            continue
        status = ""
        if not answer.approved:
            port.write(flow_run_id, records.Rejection(
                summary=f"rejected by {by}: {answer.comment or 'no reason given'}", by=by,
                data={"comment": answer.comment, "proof": proof, "gate": gate_round, "answer": key}))
            observer.decided(False, [by], answer.comment)
            return Decision(False, (by,), answer.comment)
        approved_by.append(by)
        comments.append(answer.comment)
        port.write(flow_run_id, records.ApprovalRecord(
            summary=f"approved by {by}" + (f": {answer.comment}" if answer.comment else ""),
            by=by, comment=answer.comment, plan_digest=plan_digest, approvals=len(approved_by),
            required=policy.required, proof=proof, gate=gate_round, answer=key))
        if len(approved_by) >= policy.required:
            observer.decided(True, approved_by, "; ".join(c for c in comments if c))
            return Decision(True, tuple(approved_by), "; ".join(c for c in comments if c))
        observer.approved_so_far(approved_by)
    raise RuntimeError(f"the gate of run {flow_run_id} was answered too often")


def _policy_text(policy: ApprovalPolicy) -> str:
    return (f"{policy.required} of {', '.join(policy.approvers)}"
            + ("" if policy.self_approval else "; not the requester"))


def _timed_out(flow_run_id: str, policy: ApprovalPolicy, gate_round: int | None = None, key: str | None = None,
               port: RunPort = PREFECT) -> Decision:
    record_timeout(flow_run_id, policy.timeout, port=port, gate=gate_round, answer=key)
    return Decision(False, ("timeout",), "approval timed out", timed_out=True)


def record_timeout(flow_run_id: str, timeout_s: float, port: RunPort = PREFECT, **data) -> None:
    port.write(flow_run_id, records.Rejection(
        summary=f"nobody approved within {timeout_s:.0f}s: rejected by timeout", by="timeout",
        data={"timeout_s": timeout_s, **{k: v for k, v in data.items() if v is not None}}))


def _dialog(runbook_id: str, plan_markdown: str, digest: str, policy: ApprovalPolicy, approved_by: list[str],
            requester: str = "", deadline: dt.datetime | None = None, run_id: str = "", refused: str = "") -> str:
    """The resume form's description in Prefect's UI: what is asked, by whom, of whom, until when,
    how to answer (not with this form), the answer refused last, and the plan (its table linked)."""
    from mq_runbooks.kit.run_artifacts import artifact_link, plan_key

    so_far = f" Approved so far by {', '.join(approved_by)}." if approved_by else ""
    until = f" until **{deadline.strftime('%Y-%m-%d %H:%M:%S UTC')}**" if deadline is not None else ""
    link = f" (the whole table: [plan artifact]({artifact_link(plan_key(run_id))}))" if run_id else ""
    lines = [
        f"## Approve `{runbook_id}`?",
        "",
        f"**Asked by** {requester or 'unknown'}. **Waiting for** {policy.required} approval(s) from "
        f"{', '.join(policy.approvers)}{'' if policy.self_approval else ' (not the requester)'}{until}.{so_far}",
        "",
        f"**Answer with** `runbook approve {run_id} --comment ...` or `runbook reject {run_id} --reason ...`, "
        f"or the Approve / Reject buttons in Slack. This form is for reading: an answer submitted here is not "
        f"signed by mq-runbooks and is refused (the run then keeps waiting and says so here).",
    ]
    if refused:
        lines += ["", f"> **Refused:** {refused}"]
    lines += ["", f"### Plan `{digest[:12]}`{link}", "", plan_markdown]
    return "\n".join(lines)
