"""How a run ends when its gate says no (rejected by an approver, or timed out with nobody
answering), and the state a run that has ended keeps if it is executed again.

A declined run is an expected outcome, not an error, and no success either: Prefect shows it as
such. Rejected is of type CANCELLED, named `Rejected` (grey: someone decided not to act); TimedOut
is of type FAILED, named `TimedOut` (red: nobody answered in time, which someone should look at).
Every run is executed by our executor (app/executor.py), which asks Prefect's engine for the final
state rather than the flow's result, so neither raises `CancelledRun`/`FailedRun`: the run logs one
INFO line (`run ID rejected by bob: reason; nothing was changed`), Prefect its usual INFO `Finished in
state Rejected(...)`, and no traceback. (Runs of earlier versions ended declined as COMPLETED with
these names: `is_declined` still tells them from successes.)

`runbook run --wait` exits 1 for both; the journal's outcome is `rejected`, which Slack and the
postmortem read; `runbook runs --state rejected|timedout` find them by name, `--state failed` lists
them too.

A run executed again after it ended (the Prefect UI's Retry on an ended run) does nothing and ends in
the state its journal's outcome says, not in a new failure (`ended_state`).
"""
from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger
from prefect.states import Cancelled, Completed, Crashed, Failed, State

from mq_runbooks.kit import journal
from mq_runbooks.kit.gateway.names import DECLINED_STATE_NAMES, REFUSED, REJECTED, TIMED_OUT



def declined_state(run_id: str, summary: str, timed_out: bool, reason: str, logger=None) -> State:
    """The final state of a run whose gate said no (`summary`: the journal's outcome line, e.g.
    "rejected by bob; nothing was changed"), after one INFO line saying so with the reason (to
    `logger`, the run's own by default)."""
    (logger or get_run_logger()).info("run %s %s", run_id, _with_reason(summary, reason))
    return timed_out_state(summary) if timed_out else Cancelled(message=summary, name=REJECTED)


def timed_out_state(message: str) -> State:
    """The final state of a run whose gate's deadline passed with nobody answering."""
    return Failed(message=message, name=TIMED_OUT)


def ended_state(entries: Sequence[journal.Entry]) -> State | None:
    """The final state a run's journal says it ended in (its outcome), for a run executed again
    after it ended; None while it has no outcome.

        ended_state(entries)  # Cancelled(name="Rejected", message="rejected by bob; nothing was changed")
    """
    outcome = journal.last(list(entries), "outcome")
    if outcome is None:
        return None
    kind, message = outcome.data.get("outcome"), outcome.summary
    if kind in ("succeeded", "unchanged"):
        return Completed(message=message)
    if kind == "rejected":
        rejection = journal.last(list(entries), "rejection")
        timed_out = rejection is not None and rejection.data.get("by") == "timeout"
        return timed_out_state(message) if timed_out else Cancelled(message=message, name=REJECTED)
    if kind == "cancelled":
        return Cancelled(message=message)
    if kind == "crashed":
        return Crashed(message=message)
    return Failed(message=message, name=REFUSED if kind == "refused" else "Failed")


def _with_reason(summary: str, reason: str) -> str:
    head, _, tail = summary.partition(";")
    reason = " ".join(reason.split())
    return f"{head}: {reason};{tail}" if reason else summary


def is_declined(state_name: str) -> bool:
    """Whether a final state of this name is a gate's no (never a success, whatever its type)."""
    return state_name in DECLINED_STATE_NAMES


__all__ = ["DECLINED_STATE_NAMES", "REFUSED", "REJECTED", "TIMED_OUT", "declined_state", "ended_state",
           "is_declined", "timed_out_state"]
