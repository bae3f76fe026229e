"""How a run ends when its gate says no: rejected by an approver, or timed out with nobody answering.

That is an expected outcome, not an error. Its final Prefect state is of type COMPLETED, named
`Rejected` or `TimedOut`: Prefect's engine raises the state of a flow that returns a Failed or
Cancelled state (`FailedRun` / `CancelledRun`) wherever it runs the flow for its result (the runner of
`runbook serve`, a worker's `python -m prefect.engine`), which logs an ERROR with a traceback; a
Completed state ends the flow quietly. So the run logs one INFO line (`run ID rejected by bob:
reason; nothing was changed`) and Prefect its usual `Finished in state Rejected(...)`.

A declined run is still not a success: `RunView.succeeded` is false for these names, so `runbook run
--wait` exits 1 and `status`/`runs` show it in red; the journal's outcome is `rejected`, which Slack
and the postmortem read. `runbook runs --state rejected|timedout` find them by name.
"""
from __future__ import annotations

from prefect import get_run_logger
from prefect.states import Completed, State

REJECTED, TIMED_OUT = "Rejected", "TimedOut"
DECLINED_STATE_NAMES = (REJECTED, TIMED_OUT)


def declined_state(run_id: str, summary: str, timed_out: bool, reason: str) -> State:
    """The final state of a run whose gate said no (`summary`: the journal's outcome line, e.g.
    "rejected by bob; nothing was changed"), after one INFO line saying so with the reason."""
    get_run_logger().info("run %s %s", run_id, _with_reason(summary, reason))
    return Completed(message=summary, name=TIMED_OUT if timed_out else REJECTED)


def _with_reason(summary: str, reason: str) -> str:
    head, _, tail = summary.partition(";")
    reason = " ".join(reason.split())
    return f"{head}: {reason};{tail}" if reason else summary


def is_declined(state_name: str) -> bool:
    """Whether a final state of this name is a gate's no (of type COMPLETED, yet not a success)."""
    return state_name in DECLINED_STATE_NAMES


__all__ = ["DECLINED_STATE_NAMES", "REJECTED", "TIMED_OUT", "declined_state", "is_declined"]
