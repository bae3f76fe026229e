"""Runs of runbooks, seen from outside the flow: start one, list them, read one's state and journal,
answer its approval gate. The CLI (and later the HTTP app) are thin edges over these functions.

A run started here is a Prefect flow run of one of the runbook's deployments (app/workers.py): by
default `<id>/local`, executed by a detached `python -m mq_runbooks.app.executor RUN_ID` process with
this machine's configuration, so `runbook run` returns at once; with RUNBOOK_RUN_ON=workers, the
work pool's deployment, executed by any worker. At its gate the run suspends (no process waits);
answering it here resumes it, and a local run gets its executor again.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel

from mq_runbooks.base.catalog import Catalog, Runbook
from mq_runbooks.base.errors import NotFoundError, UsageError
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.teams import people_for, teams_for
from mq_runbooks.kit import gateway, journal
from mq_runbooks.kit.gateway.names import lock_of, runbook_of, runbook_tag
from mq_runbooks.kit.endings import DECLINED_STATE_NAMES, REJECTED, TIMED_OUT, is_declined
from mq_runbooks.kit.gate import refusal, sign_answer
from mq_runbooks.kit.identity import proof_kind, verify_answer
from mq_runbooks.kit.records import ApprovalRefused
from mq_runbooks.kit.labels import RUN_TAG, WAITS_FOR, label, run_name, start_tags
from mq_runbooks.kit.signing import signing_key

RUNBOOK_TAG = RUN_TAG
MIN_PREFIX = 6
_PAGE = 200
# `runbook runs --state`: Prefect's state types, and the names of runs their gate declined (kit/endings.py).
STATE_TYPES = ("scheduled", "pending", "running", "paused", "completed", "failed", "cancelled", "crashed")
STATE_NAMES = {"rejected": REJECTED, "timedout": TIMED_OUT}
STATES = (*STATE_TYPES, *STATE_NAMES)


@dataclass(frozen=True)
class RunView:
    """A run as people see it: Prefect's state plus the journal."""

    id: str
    name: str
    runbook: str
    state: str  # Prefect's state name, e.g. Running, Suspended (at its gate), Completed, Rejected, Failed
    state_type: str
    message: str
    started: str | None
    entries: list[journal.Entry]
    requested_by: str = ""
    target: str = ""  # the target in the runbook's words (its steps' `target`), e.g. primary/billing
    lock: str = ""  # the run's lock key, e.g. kafka:primary:group:billing
    pause_key: str = ""  # the suspension an answer resumes (a signed answer names it), while paused
    journal_problems: tuple[str, ...] = ()  # entries not signed by the engine, missing links (kit/journal.py)

    @property
    def finished(self) -> bool:
        return self.state_type in {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}

    @property
    def succeeded(self) -> bool:
        # A declined run is no success, also one of an earlier version that ended it as Completed.
        return self.state_type == "COMPLETED" and not is_declined(self.state)

    def waiting_for(self) -> str | None:
        """Who the gate waits for, when it waits."""
        if self.state_type != "PAUSED":
            return None
        request = journal.last(self.entries, "approval_requested")
        if request is None:
            return "an approval"
        return f"{request.data.get('required', 1)} approval(s) from {', '.join(request.data.get('approvers', []))}"


def resolve_run(client, reference: str) -> FlowRun:
    """The one run `reference` names: its full id, a unique prefix of its id (at least MIN_PREFIX
    characters), or its Prefect name (e.g. kafka-replay primary/billing). None or several: UsageError (the CLI exits 2)."""
    reference = reference.strip()
    try:
        return client.read_flow_run(UUID(reference))
    except ValueError:
        pass
    except ObjectNotFound:
        raise NotFoundError(f"no run {reference!r} (list them with: runbook runs)") from None
    found: dict[str, FlowRun] = {}
    by_name = client.read_flow_runs(names=[reference], tags=[RUNBOOK_TAG], limit=_PAGE)
    found.update((str(run.id), run) for run in by_name)
    prefix = reference.lower()
    if len(prefix) >= MIN_PREFIX and all(c in "0123456789abcdef-" for c in prefix):
        for run in client.every_flow_run(tags=[RUNBOOK_TAG]):
            if str(run.id).startswith(prefix):
                found[str(run.id)] = run
    if len(found) == 1:
        return next(iter(found.values()))
    if found:
        matches = "\n".join(f"  {run.id}  {run.name}" for run in found.values())
        raise UsageError(f"{reference!r} names {len(found)} runs; give more of the id:\n{matches}")
    hint = (f"; an id prefix needs at least {MIN_PREFIX} characters"
            if len(prefix) < MIN_PREFIX and all(c in "0123456789abcdef-" for c in prefix) else "")
    raise NotFoundError(f"no run {reference!r}: give its id, a unique prefix of it, or its name "
                        f"(list them with: runbook runs){hint}")


def read_run(reference: str) -> RunView:
    """A run with its journal, by full id, unique id prefix or Prefect name (see resolve_run)."""
    from mq_runbooks.kit.crashes import conclude_expired, restore_if_suspended
    from mq_runbooks.kit.gate import PAUSE_EXPIRED

    with gateway.connect() as client:
        flow_run = resolve_run(client, reference)
        if flow_run.state is not None and flow_run.state.message == PAUSE_EXPIRED and conclude_expired(str(flow_run.id)):
            flow_run = client.read_flow_run(flow_run.id)  # a gate that timed out with nobody there: now told
        elif flow_run.state is not None and flow_run.state.is_crashed() and restore_if_suspended(str(flow_run.id)):
            flow_run = client.read_flow_run(flow_run.id)  # it waits at its gate: not crashed
    entries, problems = journal.read_checked(flow_run.id)
    return _view(flow_run, entries, problems)


def _view(flow_run: FlowRun, entries: list[journal.Entry], problems: list[str] = ()) -> RunView:
    state = flow_run.state
    runbook = runbook_of(flow_run.tags) or "?"
    lock = lock_of(flow_run.tags) or ""
    start = journal.last(entries, "parameters")
    # The runbook's own words: its journal's start, else the run's name ("<runbook> <target>", a
    # restore's "restore <runbook> <target>"), else the lock key.
    _, named, target = flow_run.name.partition(f"{runbook} ")
    target = str(start.data.get("target") or "") if start is not None else (target if named else "")
    requested_by = (flow_run.parameters or {}).get("requested_by") or ""
    return RunView(
        id=str(flow_run.id), name=flow_run.name, runbook=runbook,
        state=state.name if state else "Unknown", state_type=state.type.value if state else "UNKNOWN",
        message=(state.message or "") if state else "",
        started=(flow_run.start_time or flow_run.created).isoformat() if (flow_run.start_time or flow_run.created) else None,
        entries=entries, requested_by=str(requested_by), target=target or lock, lock=lock,
        pause_key=(state.state_details.pause_key or "") if state is not None and state.is_paused() else "",
        journal_problems=tuple(problems),
    )


def _state_filter(states: tuple[str, ...]) -> dict[str, list[str]]:
    """The server's filter for `states` (state types or names): a superset of `in_states` (which
    tells declined runs apart)."""
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise UsageError(f"unknown state {', '.join(unknown)} (states: {', '.join(STATES)})")
    if not states:
        return {}
    types = [s.upper() for s in states if s in STATE_TYPES]
    names = [STATE_NAMES[s] for s in states if s in STATE_NAMES]
    if "failed" in states:  # a declined run is no success: `failed` lists it (Rejected is of type Cancelled)
        names = sorted({*names, *DECLINED_STATE_NAMES})
    return {"state_types": types, "state_names": names}


def in_states(view: RunView, states: tuple[str, ...]) -> bool:
    """Whether a run is in one of `states` (see STATES) as `runbook runs --state` means them: a declined
    run (Rejected: Cancelled by type; TimedOut: Failed; Completed in earlier versions) is `rejected` or
    `timedout` and `failed`, never `completed` nor `cancelled`."""
    if not states:
        return True
    declined = is_declined(view.state)
    for state in states:
        if state in STATE_NAMES:
            if view.state == STATE_NAMES[state]:
                return True
        elif state == "failed":
            if declined or view.state_type == "FAILED":
                return True
        elif view.state_type == state.upper() and not (declined and state in ("completed", "cancelled")):
            return True
    return False


def list_runs(limit: int = 20, runbook_id: str | None = None, states: tuple[str, ...] = (),
              mine: Callable[[RunView], bool] | None = None) -> list[RunView]:
    """The newest runs, newest first: of one runbook, in some states (see STATES, in_states), and/or
    those `mine` accepts (read page by page until `limit` are found). An ended run's message is its
    outcome's summary (its journal's words, not the exception text Prefect keeps of a failed run)."""
    tags = [RUNBOOK_TAG] + ([runbook_tag(runbook_id)] if runbook_id else [])
    matching = _state_filter(states)
    views: list[RunView] = []
    with gateway.connect() as client:
        for run in client.every_flow_run(tags=tags, sort="expected_start_time_desc", page=min(limit, _PAGE),
                                         **matching):
            view = _view(run, [])
            if not in_states(view, states):
                continue
            if mine is None or mine(view):
                views.append(view)
                if len(views) >= limit:
                    break
        return [_with_outcome(view, client) if view.finished else view for view in views]


def _with_outcome(view: RunView, client) -> RunView:
    """The ended run with its outcome's summary as its message (Prefect's, when its journal has none)."""
    from dataclasses import replace

    outcome = journal.last(journal.read(view.id, client), "outcome")
    return replace(view, message=outcome.summary) if outcome is not None else view


def waits_for(settings: Settings, catalog: Catalog, view: RunView, who: str) -> bool:
    """Whether `view` waits at its gate for an approval that `who` may give."""
    if view.state_type != "PAUSED":
        return False
    entries = view.entries or journal.read(view.id)
    request = journal.last(entries, "approval_requested")
    if request is None:
        return False
    try:
        policy = catalog.get(view.runbook).approval
    except NotFoundError:
        return False
    approvals = [e.data.get("by") for e in entries if e.kind == "approval" and e.at >= request.at]
    return refusal(policy, teams_for(settings), request.data.get("requester", ""), who, True, approvals,
                   people_for(settings)) is None


GATE_SETTLE_S = 10.0  # a run asks for approval (journal, Slack) a moment before it pauses


def _at_its_gate(view: RunView) -> RunView:
    """The run once paused, when it has just asked for approval and is about to pause (a click on the
    Slack message can arrive in between); else the run as it is."""
    deadline = time.monotonic() + GATE_SETTLE_S
    while view.state_type == "RUNNING" and time.monotonic() < deadline:
        request = journal.last(view.entries, "approval_requested")
        # A refused answer or one approval of several sends it back to the same gate; these end it.
        if request is None or any(e.at > request.at and e.kind in ("rejection", "outcome") for e in view.entries):
            return view
        time.sleep(0.3)
        view = read_run(view.id)
    return view


def answer_gate(settings: Settings, catalog: Catalog, run_id: str, approved: bool, by: str, comment: str,
                via: str = "cli", proof: str = "") -> RunView:
    """Judge an answer to a run waiting at its gate and, when it holds, resume the run with it signed
    by the engine's key (kit/gate.py sign_answer): the proof of who answers (`proof`: "token:<t>",
    "os-user", "slack", or empty for a typed name) and the runbook's policy are checked here, and the
    run checks the signature, the kind of proof and the policy again. The token itself never goes
    into the run.

    A refused answer is recorded in the run's journal and raised as UsageError with the reason.
    """
    key = signing_key(settings)
    view = _at_its_gate(read_run(run_id))
    run_id = view.id
    if view.state_type != "PAUSED":
        raise UsageError(f"run {run_id} is not waiting for approval (its state is {view.state})")
    request = journal.last(view.entries, "approval_requested")
    if request is None:
        raise UsageError(f"run {run_id} is paused but has not asked for approval")
    policy = catalog.get(view.runbook).approval
    approvals_since = [e.data.get("by") for e in view.entries if e.kind == "approval" and e.at >= request.at]
    teams = teams_for(settings)
    by, reason = verify_answer(by, proof, teams, settings.deployment, key=key)
    reason = reason or refusal(policy, teams, request.data.get("requester", ""), by, approved, approvals_since,
                               people_for(settings))
    if not approved and not comment.strip():
        reason = reason or "a rejection needs a reason (--reason)"
    if reason:
        journal.write(run_id, ApprovalRefused(summary=reason, by=by, data={"approved": approved, "via": via,
                                                                         "proof": proof_kind(proof)}))
        raise UsageError(f"refused: {reason}")
    answer = sign_answer(key, run_id, view.pause_key, decision="approve" if approved else "reject", by=by,
                         proof=proof_kind(proof), plan_digest=request.data.get("plan_digest", ""), comment=comment)
    try:
        gateway.resume_flow_run(UUID(run_id), run_input=answer)
    except Exception as exc:  # e.g. someone answered a moment earlier, or the pause timed out
        raise UsageError(f"run {run_id} could not be resumed: {exc}") from None
    if not execute_if_local(settings, run_id):
        from mq_runbooks.app.workers import wake

        wake(run_id)  # a worker of this process (serve's) executes it now rather than at its next poll
    return view


VERDICT_WAIT_S = 60.0


def await_verdict(run_id: str, pause_key: str, timeout_s: float = VERDICT_WAIT_S) -> journal.Entry | None:
    """The gate's verdict on the answer given at `pause_key` (its journal entry: approval, rejection
    or approval_refused), once the run has judged it; None if it has not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        view = read_run(run_id)
        verdict = next((e for e in reversed(view.entries) if e.data.get("answer") == pause_key
                        and e.kind in ("approval", "rejection", "approval_refused")), None)
        if verdict is not None or view.finished or time.monotonic() > deadline:
            return verdict
        time.sleep(0.25)


def execute_if_local(settings: Settings, run_id: str) -> bool:
    """Start the executor of a run of the local deployment this process has just answered (a run on
    workers is theirs), with this process's own configuration: nothing a run holds (its job
    variables, parameters or tags) chooses how it is executed. True if one was started."""
    from mq_runbooks.app import workers

    with gateway.connect() as prefect:
        flow_run = prefect.read_flow_run(UUID(run_id))
    if not workers.is_local(flow_run) or flow_run.state is None or not flow_run.state.is_scheduled():
        return False
    workers.spawn_executor(settings, run_id)
    return True


def run_log_path(settings: Settings, run_id: str) -> Path:
    return settings.snapshot_dir.parent / "run-logs" / f"{run_id}.log"


def cancel_run(settings: Settings, catalog: Catalog, reference: str, by: str, reason: str, proof: str = "") -> RunView:
    """Stop a run that has not started acting (scheduled, pending, or waiting at its gate): its state
    Cancelled, its outcome `cancelled` in the journal, its lock freed, its postmortem drafted. Who may:
    whoever may reject it (its requester or an approver), proven as for an answer."""
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Cancelled

    from mq_runbooks.kit.crashes import release_lock
    from mq_runbooks.kit.records import Outcome
    from mq_runbooks.kit.steps import publish_postmortem

    view = read_run(reference)
    if view.finished:
        raise UsageError(f"run {view.id} has already ended ({view.state})")
    if view.state_type == "RUNNING":
        raise UsageError(f"run {view.id} is executing (Running): stopping it mid-step could leave a change half "
                         f"made; reject it at its gate, or wait for its outcome (runbook status {view.id})")
    if not reason.strip():
        raise UsageError("a cancellation needs a reason (--reason)")
    teams = teams_for(settings)
    who, refused = verify_answer(by, proof, teams, settings.deployment)
    start = journal.last(view.entries, "parameters")
    requester = (start.data.get("requested_by") if start else None) or view.requested_by
    refused = refused or refusal(catalog.get(view.runbook).approval, teams, requester, who, False, [],
                                 people_for(settings))
    if refused:
        journal.write(view.id, ApprovalRefused(summary=f"cancel refused: {refused}", by=who,
                                               data={"proof": proof_kind(proof)}))
        raise UsageError(f"refused: {refused}")
    message = f"cancelled by {who}: {reason}; nothing was changed"
    with gateway.connect() as prefect:
        result = prefect.set_flow_run_state(UUID(view.id), Cancelled(message=message))
    if result.status != SetStateStatus.ACCEPT:
        raise UsageError(f"run {view.id} could not be cancelled ({result.details}); see runbook status {view.id}")
    journal.write(view.id, Outcome(outcome="cancelled", summary=message, data={"by": who, "proof": proof_kind(proof)}))
    label(view.id, remove=[WAITS_FOR])
    release_lock(view.entries)
    publish_postmortem(view.id)
    return read_run(view.id)
