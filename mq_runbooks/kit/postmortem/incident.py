"""One postmortem per incident: the runs started by the alerts of one alert group that fired together
share one draft, instead of a draft each.

An alert's trigger carries its `incident` (integrations/alerts.py:incident_key: Alertmanager's
groupKey and when the group's first alert started; without a group key, the alert occurrence). A
run started by hand has none and keeps a draft of its own. The incident's draft is one file, keyed by
the incident (its id ends in the incident's first 8 hex digits), listing its runs in the front
matter (`incident`, `runs`):

    one run so far    the single-run draft (postmortem.md.j2)
    several runs      incident.md.j2: the runs, one timeline of them all, the team's sections once,
                      then each run's summary, impact, decisions and appendix

Each run redrafts the whole incident when it ends (under a lock per incident, so two runs ending
together do not drop each other), reading the other runs again from Prefect and their journals.
"""
from __future__ import annotations

import fcntl
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mq_runbooks.base.errors import NotFoundError
from mq_runbooks.base.files import GROUP_READABLE, PRIVATE, make_directory
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.journal import Entry, last
from mq_runbooks.kit.postmortem.context import build_context, scrubber_for
from mq_runbooks.kit.postmortem.records import RunRecords, read_records
from mq_runbooks.kit.postmortem.render import render
from mq_runbooks.kit.postmortem.store import Postmortem, find_by_incident, save_draft

INCIDENT_TEMPLATE = "incident.md.j2"
_INCIDENT = re.compile(r"^[0-9a-f]{16,64}$")


def incident_of(entries: list[Entry]) -> str | None:
    """The incident a run belongs to (from the trigger its journal recorded), or None."""
    start = last(entries, "parameters")
    trigger = (start.data.get("trigger") if start else None) or {}
    incident = trigger.get("incident") if isinstance(trigger, dict) else None
    return incident if isinstance(incident, str) and _INCIDENT.match(incident) else None


@contextmanager
def _locked(directory: Path, incident: str) -> Iterator[None]:
    make_directory(directory, GROUP_READABLE)
    lock = os.open(directory / f".incident-{incident}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)
    with os.fdopen(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def draft_incident(settings: Settings, incident: str, records: RunRecords,
                   allow_message_values: bool = False) -> tuple[Postmortem, bool]:
    """Write or refresh the incident's one draft with `records`' run among its runs; (it, written)."""
    directory = Path(settings.postmortem_dir)
    with _locked(directory, incident):
        existing = find_by_incident(directory, incident)
        if existing is not None and existing.status != "draft":
            return existing, False
        known = [str(r) for r in (existing.meta.get("runs") or [])] if existing else []
        every = [records]
        for run_id in known:
            if run_id != records.run_id:
                try:
                    every.append(read_records(run_id))
                except NotFoundError:  # deleted from Prefect since: the draft keeps the runs that remain
                    continue
        every.sort(key=lambda r: r.started or r.created)
        scrubber = scrubber_for(settings, allow_message_values)
        contexts = [build_context(r, scrubber, settings) for r in every]
        if len(contexts) == 1:
            outcome, body = contexts[0]["run"]["outcome"], render(contexts[0], settings.postmortem_templates)
        else:
            context = incident_context(contexts)
            outcome = context["incident"]["outcome"]
            body = render(context, settings.postmortem_templates, INCIDENT_TEMPLATE)
        targets = list(dict.fromkeys(c["run"]["target_name"] for c in contexts if c["run"]["target_name"]))
        return save_draft(directory, every[0].runbook, every[0].run_id, outcome, scrubber.text(body),
                          incident=incident, runs=[r.run_id for r in every], targets=targets,
                          alertnames=sorted({c["trigger"]["alertname"] for c in contexts if c["trigger"]["alertname"]}))


def incident_context(contexts: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields of incident.md.j2 from the runs' own contexts (postmortem.build_context), oldest first."""
    outcomes = Counter(c["run"]["outcome"] for c in contexts)
    outcome = (next(iter(outcomes)) if len(outcomes) == 1
               else "mixed (" + ", ".join(f"{n} {o}" for o, n in outcomes.items()) + ")")
    alertnames = sorted({c["trigger"]["alertname"] for c in contexts if c["trigger"]["alertname"]})
    return {
        "h": "##",
        "incident": {"alertnames": ", ".join(alertnames) or "(no alertname)", "outcome": outcome,
                     "group_key": next((c["trigger"]["group_key"] for c in contexts if c["trigger"]["group_key"]), ""),
                     "started": min(c["run"]["started"] for c in contexts),
                     "targets": ", ".join(dict.fromkeys(c["run"]["target_name"] for c in contexts
                                                       if c["run"]["target_name"]))},
        "runs": contexts, "timeline": merged(contexts, "timeline"), "record": merged(contexts, "record"),
        "generated": contexts[0]["generated"],
    }


def merged(contexts: list[dict[str, Any]], key: str) -> list[dict[str, str]]:
    """The runs' timelines (`key`: "timeline" or "record") as one, oldest first, each row naming its run.
    A line the runs share (the same alert firing or resolving, which started or reached several runs) is
    one row naming each of them."""
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for context in contexts:
        run = f"`{context['run']['short_id']}`"
        for row in context[key]:
            shared = (row["at"], row["source"], row["event"]) if row["source"] == "alert" else None
            found = rows.get(shared) if shared else None
            if found is not None:
                found["run"] += f", {run}"
            else:
                rows[shared or (row["at"], run, str(len(rows)))] = {**row, "run": run}
    return sorted(rows.values(), key=lambda row: row["at"])  # '2026-11-27T05:58:01.123Z' sorts as it reads
