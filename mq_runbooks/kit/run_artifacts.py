"""The artifacts people read on a run's page in Prefect's UI, each under a key of the run (so a new
version replaces the one shown, and the older ones stay as its history, instead of piling up cards):

    plan-<run id>      the plan as a table (a row per partition / queue / entry), from the first plan on;
                       each version of the plan (re-planned after approval) is a new version of it
    journal-<run id>   the journal as one Markdown timeline, oldest first (time, what, summary):
                       published when the run suspends at its gate and when it ends, updated in place
                       (`put_markdown`: the run's page shows one card, the latest; the postmortem's is too)

(The journal's own entries are artifacts too, one per entry, of type `runbook-journal`: the record the
engine signs and reads back, shown by Prefect as cards of an unknown type. The timeline is what to read.)

The gate's form links to the plan's artifact (`artifact_link`).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from mq_runbooks.kit import gateway


def plan_key(run_id: str) -> str:
    return f"plan-{run_id.lower()}"


PLAN_TABLE_ROWS = 1000  # rows of the plan's table artifact; a bigger plan says where the rest is


def publish_plan(run_id: str, summary: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The plan as a table artifact of the run (a new version of `plan_key`): its first PLAN_TABLE_ROWS
    rows, and the description says how many there are and where to read them all; returns its key."""
    table = [{name: _cell(value) for name, value in zip(columns, row)} for row in rows[:PLAN_TABLE_ROWS]]
    rest = (f"\n\nThe first {PLAN_TABLE_ROWS:,} of {len(rows):,} rows: `runbook status {run_id} --plan` "
            f"shows them all." if len(rows) > PLAN_TABLE_ROWS else "")
    with gateway.connect() as prefect:
        prefect.create_artifact(key=plan_key(run_id), type="table", flow_run_id=UUID(run_id), data=json.dumps(table),
                                description=f"**Plan**: {summary}"[:1800] + rest)
    return plan_key(run_id)


def timeline_key(run_id: str) -> str:
    return f"journal-{run_id.lower()}"


def publish_timeline(run_id: str, entries: Sequence[Any]) -> str:
    """The journal (kit/journal.py entries) as one Markdown timeline artifact of the run (`timeline_key`,
    updated in place); returns its key."""
    lines = ["| time (UTC) | what | summary |", "|---|---|---|"]
    for entry in sorted(entries, key=lambda e: e.at):
        summary = " ".join(str(entry.summary).split()).replace("|", "\\|")
        lines.append(f"| {entry.at.strftime('%Y-%m-%d %H:%M:%S')} | {entry.kind.replace('_', ' ')} | {summary} |")
    return put_markdown(run_id, timeline_key(run_id), f"### Journal of run {run_id}\n\n" + "\n".join(lines),
                        f"the run's journal, {len(entries)} entries, oldest first")


def put_markdown(run_id: str, key: str, markdown: str, description: str) -> str:
    """A Markdown artifact of the run under `key`: the run's own one updated in place when it has one
    (so the run's page in Prefect's UI shows one card, the latest), else created; returns the key."""
    with gateway.connect() as prefect:
        found = prefect.read_artifacts(keys=[key], flow_run_ids=[UUID(run_id)], limit=1)
        if found:
            prefect.update_artifact(found[0].id, data=markdown, description=description)
        else:
            prefect.create_artifact(key=key, type="markdown", flow_run_id=UUID(run_id), data=markdown,
                                    description=description)
    return key


def artifact_link(key: str) -> str:
    """Where Prefect's UI shows the latest version of a keyed artifact."""
    from prefect.settings import PREFECT_UI_URL

    return f"{(PREFECT_UI_URL.value() or '').rstrip('/')}/artifacts/key/{key}"


def _cell(value: Any) -> Any:
    return value if isinstance(value, (int, float, str)) or value is None else str(value)


__all__ = ["artifact_link", "plan_key", "publish_plan", "publish_timeline", "put_markdown", "timeline_key"]
