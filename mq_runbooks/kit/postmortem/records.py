"""What Prefect recorded about a run, read for its postmortem: the flow run and its state history,
its task runs and their states, and from its logs only what the draft shows: the first warnings and
errors (filtered by level on the server), the newest lines (one page, newest first) and how many
lines there are (counted by probing offsets), never every line.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from uuid import UUID

from prefect.exceptions import ObjectNotFound

from mq_runbooks.base.errors import NotFoundError
from mq_runbooks.kit import gateway, journal
from mq_runbooks.kit.gateway.names import runbook_of

LOG_PAGE = 200  # the most the Prefect API returns per request
LOG_TAIL = 50
NOTABLE_LOGS = 20  # warnings and errors shown in the timeline, at most
_WARNING = 30
# Routine lines the excerpt leaves out (below WARNING only): Prefect's "Finished in state Completed(...)"
# of each task run and of the flow run say what the state history in the timeline already says, and
# "Running hook '_redraft_final' ..." is the run drafting its postmortem once more.
NOISE_PREFIXES = (("prefect.task_runs", "Finished in state Completed("),
                  ("prefect.flow_runs", "Finished in state Completed("),
                  ("prefect.flow_runs", "Running hook '_redraft_final'"))
_TASK_RUN_SUFFIX = re.compile(r"-[0-9a-f]{3}$")  # Prefect names task runs '<task name>-<3 hex digits>'


@dataclass(frozen=True)
class StateChange:
    at: dt.datetime
    name: str
    type: str
    message: str
    task: str | None = None  # None: the flow run's own state


@dataclass(frozen=True)
class LogLine:
    at: dt.datetime
    level: str
    logger: str
    message: str


@dataclass
class RunRecords:
    """A run as recorded: the journal plus Prefect's states and logs."""

    run_id: str
    runbook: str
    name: str
    created: dt.datetime
    started: dt.datetime | None
    ended: dt.datetime | None
    state_name: str
    state_type: str
    state_message: str
    entries: list[journal.Entry]
    states: list[StateChange] = field(default_factory=list)
    log_lines: int = 0
    log_tail: list[LogLine] = field(default_factory=list)
    notable_logs: list[LogLine] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state_type in {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)


def read_records(run_id: str) -> RunRecords:
    """Everything the postmortem of `run_id` is drawn from; NotFoundError for an unknown run."""
    try:
        flow_run_id = UUID(str(run_id))
    except ValueError:
        raise NotFoundError(f"{run_id!r} is not a run id (list runs with: runbook runs)") from None
    with gateway.connect() as client:  # one client: each one costs a TLS context (~0.1 s)
        entries = journal.read(flow_run_id, client)
        try:
            flow_run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise NotFoundError(f"no run {run_id} on the Prefect server (list runs with: runbook runs)") from None
        tagged = runbook_of(flow_run.tags)
        started = journal.last(entries, "parameters")
        state = flow_run.state
        records = RunRecords(
            run_id=str(flow_run.id), runbook=tagged or (started.data.get("runbook") if started else None) or "unknown",
            name=flow_run.name, created=_utc(flow_run.created), started=_utc(flow_run.start_time),
            ended=_utc(flow_run.end_time), state_name=state.name if state else "Unknown",
            state_type=state.type.value if state else "UNKNOWN", state_message=(state.message or "") if state else "",
            entries=entries,
        )
        records.states = _flow_states(client, flow_run_id) + _task_states(client, flow_run_id)
        _read_logs(client, flow_run_id, records)
    return records


def _flow_states(client, flow_run_id: UUID) -> list[StateChange]:
    return [StateChange(_utc(s.timestamp), s.name, s.type.value, s.message or "")
            for s in client.read_flow_run_states(flow_run_id)]


def _task_states(client, flow_run_id: UUID) -> list[StateChange]:
    """Each task run's states, except the bookkeeping ones (Scheduled, Pending)."""
    changes: list[StateChange] = []
    task_runs = client.read_task_runs(flow_run_id)
    for task_run in task_runs:
        for state in client.read_task_run_states(task_run.id):
            if state.type.value in {"SCHEDULED", "PENDING"} and state.name not in {"AwaitingRetry"}:
                continue
            changes.append(StateChange(_utc(state.timestamp), state.name, state.type.value, state.message or "",
                                       task=_TASK_RUN_SUFFIX.sub("", task_run.name)))
    return changes


def _read_logs(client, flow_run_id: UUID, records: RunRecords) -> None:
    """The first warnings and errors, the last lines without the routine ones, and the number of lines."""
    notable = client.read_logs(flow_run_id, min_level=_WARNING, limit=NOTABLE_LOGS)
    records.notable_logs = [_line(log) for log in notable]
    newest = client.read_logs(flow_run_id, limit=LOG_PAGE, newest_first=True)
    kept = [log for log in newest if log.level >= _WARNING or not _routine(log.name, log.message)]
    records.log_tail = [_line(log) for log in reversed(kept[:LOG_TAIL])]
    records.log_lines = len(newest) if len(newest) < LOG_PAGE else _count_logs(client, flow_run_id)


def _routine(logger: str, message: str) -> bool:
    return any(logger == name and message.startswith(prefix) for name, prefix in NOISE_PREFIXES)


def _count_logs(client, flow_run_id: UUID) -> int:
    """How many lines match, when at least LOG_PAGE do (Prefect has no count of logs): probe offsets
    one line at a time, doubling until one is past the end, then halving the gap down to LOG_TAIL
    lines, which one read of them closes (about 2 log2(lines / LOG_PAGE) + 2 small requests)."""
    def read(offset: int, limit: int) -> int:
        return len(client.read_logs(flow_run_id, limit=limit, offset=offset))

    low, high = LOG_PAGE - 1, LOG_PAGE * 2  # a line at offset `low`; `high` is probed next
    while read(high, 1):
        low, high = high, high * 2
    while high - low > LOG_TAIL:  # a line at `low`, none at `high`
        middle = (low + high) // 2
        if read(middle, 1):
            low = middle
        else:
            high = middle
    return low + 1 + read(low + 1, LOG_PAGE)


def _line(log) -> LogLine:
    return LogLine(_utc(log.timestamp), _level_name(log.level), log.name, log.message)


def _level_name(level: int) -> str:
    return {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(level, str(level))
