"""A run as scripts read it: what `runbook status --json` prints and serve's API answers
(GET /api/v1/runs/{run}), in one shape. Plan rows are objects keyed by column, so a script need not
know a runbook's column order; the outcome carries the numbers the run counted (e.g. `moved`,
`seen_at_plan`); the gate's deadline and the moment of the plan shown are fields of their own.

The journal itself keeps plan rows positional (the digest and the re-plan's comparison read them so):
this is the edge where they become objects.

A big run's journal is big (a plan of 100,000 entries is 21 MB of JSON): by default each entry's
long lists and texts are cut to their first SHOWN items or lines, with `<key>_total` saying how
many there are and the entry marked `"cut": true`; `whole=True` (`runbook status RUN --plan --json`,
`GET /api/v1/runs/{run}?whole=true`) gives everything.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from mq_runbooks.kit import journal


def rows_as_objects(columns: Sequence[str], rows: Sequence[Any]) -> list[dict[str, Any]]:
    """[["orders", 0, 41]] with columns topic, partition, offset -> [{"topic": "orders", "partition": 0,
    "offset": 41}]; a row already an object is kept as it is."""
    return [dict(row) if isinstance(row, dict) else dict(zip(columns, row)) for row in rows]


def row_values(columns: Sequence[str], row: Any) -> list[Any]:
    """A plan row in column order, whether the journal's list or an API's object."""
    return [row.get(name) for name in columns] if isinstance(row, dict) else list(row)


SHOWN = 100  # items of a list, lines of a text, in an entry of a run's document unless it is whole


def entry_document(entry: journal.Entry, whole: bool = True) -> dict[str, Any]:
    """A journal entry as JSON; a plan's rows (and a plan's `to_json` inside it) as objects; unless
    `whole`, its long lists and texts cut to their first SHOWN (see the module docstring)."""
    document = entry.to_json()
    data, cut = (entry.data, False) if whole else _cut(entry.data)  # cut first: only the rows shown become objects
    columns = data.get("columns")
    if entry.kind == "plan" and isinstance(columns, list) and isinstance(data.get("rows"), list):
        data = {**data, "rows": rows_as_objects(columns, data["rows"])}
    document["data"] = data
    if cut:
        document["cut"] = True
    return document


def _cut(value: Any, depth: int = 0) -> tuple[Any, bool]:
    """(value with lists over SHOWN items and texts over SHOWN lines cut, whether anything was)."""
    if isinstance(value, dict) and depth < 3:
        out: dict[str, Any] = {}
        cut = False
        for key, item in value.items():
            if isinstance(item, list) and len(item) > SHOWN:
                out[key], out[f"{key}_total"], cut = item[:SHOWN], len(item), True
            elif isinstance(item, str) and item.count("\n") >= SHOWN:
                lines = item.splitlines()
                out[key] = "\n".join(lines[:SHOWN] + [f"... and {len(lines) - SHOWN:,} more line(s)"])
                out[f"{key}_total"], cut = len(lines), True
            else:
                out[key], inner = _cut(item, depth + 1)
                cut = cut or inner
        return out, cut
    return value, False


def gate_deadline(entries: Sequence[journal.Entry]) -> dt.datetime | None:
    """When the gate asked last times out (its request's moment plus the policy's timeout)."""
    from mq_runbooks.kit.gate import deadline_of

    request = journal.last(list(entries), "approval_requested")
    return deadline_of(request) if request is not None else None


def plan_at(entries: Sequence[journal.Entry]) -> dt.datetime | None:
    """When the newest version of the plan was computed."""
    plan = journal.last(list(entries), "plan")
    return plan.at if plan is not None else None


def outcome_document(entries: Sequence[journal.Entry]) -> dict[str, Any] | None:
    """The run's outcome with its numbers: {"outcome": "succeeded", "summary": ..., "changed": [...],
    "moved": 300, "seen_at_plan": 300}; None before it ends."""
    outcome = journal.last(list(entries), "outcome")
    return None if outcome is None else {"summary": outcome.summary, **outcome.data}


def run_document(view, now: dt.datetime | None = None, whole: bool = False) -> dict[str, Any]:
    """A run (app/runs.py RunView) as JSON: state, who and until when it waits, its plan's moment,
    its outcome and the journal (its entries' long lists and texts cut unless `whole`)."""
    now = now or journal.now_utc()
    deadline = gate_deadline(view.entries) if view.state_type == "PAUSED" else None
    planned = plan_at(view.entries)
    return {"id": view.id, "name": view.name, "runbook": view.runbook, "state": view.state,
            "message": view.message, "target": view.target, "lock": view.lock, "requested_by": view.requested_by,
            "waiting_for": view.waiting_for(), "deadline": deadline.isoformat() if deadline else None,
            "plan_at": planned.isoformat() if planned else None,
            "plan_age_s": round((now - planned).total_seconds(), 1) if planned else None,
            "finished": view.finished, "succeeded": view.succeeded, "outcome": outcome_document(view.entries),
            "journal_problems": list(view.journal_problems),
            "journal": [entry_document(entry, whole) for entry in view.entries]}


def planned(runbook, params, clusters) -> tuple[Any, str | None]:
    """(the runbook's plan of `params`, the driver's refusal of it or None): what `runbook plan` shows
    and serve's API answers. UsageError for a runbook with no separate plan step."""
    from mq_runbooks.base.errors import UsageError

    if runbook.planner is None:
        raise UsageError(f"runbook {runbook.id} has no separate plan step; `runbook run` shows its plan at the gate")
    computed = runbook.planner(params, clusters)
    steps = getattr(runbook.planner, "__self__", None)  # planner is STEPS.dry_run: the driver's own refusal
    return computed, (steps.refusal(params, computed) if steps is not None else None)


def plan_document(computed, refused: str | None) -> dict[str, Any]:
    """A plan as `runbook plan --json` prints it: rows as objects, the digest, the refusal."""
    document = computed.to_json()
    return {**document, "rows": rows_as_objects(document["columns"], document["rows"]), "refusal": refused}
