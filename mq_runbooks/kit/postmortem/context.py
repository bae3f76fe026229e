"""Postmortem drafts, drawn from a run's journal and Prefect's own records.

    draft_postmortem(settings, run_id) -> (Postmortem, written)
    render_draft(records, settings) -> (outcome, Markdown)   # no file, no Prefect: for tests and previews

reads the run (mq_runbooks.kit.postmortem.records), builds the facts the template shows (this module: what
fired, the measured impact, the timeline in UTC with each line's source, who decided what), scrubs
every secret out of them (mq_runbooks.kit.postmortem.render.Scrubber), renders the Markdown and saves it as
a draft (mq_runbooks.kit.postmortem.store). Re-drafting refreshes a draft and never touches a reviewed one.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.base.errors import ConfigError
from mq_runbooks.kit.postmortem.records import RunRecords, read_records
from mq_runbooks.kit.postmortem.render import Scrubber, known_secrets, render
from mq_runbooks.kit.postmortem.store import short_run_id
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.journal import Entry, last
from mq_runbooks.kit.notify import run_url

AUTOMATION_KINDS = ("lock", "observation", "plan", "approval_requested", "snapshot", "action", "verification",
                    "rollback", "error", "outcome", "note")


def scrubber_for(settings: Settings, allow_message_values: bool = False) -> Scrubber:
    """A scrubber of every secret the configuration knows (settings and clusters.yaml)."""
    try:
        clusters = load_clusters(settings.clusters)
    except ConfigError:
        clusters = None  # the settings' own secrets are still scrubbed; the patterns catch the rest
    return Scrubber(known_secrets(settings, clusters), allow_message_values)


def render_draft(records: RunRecords, settings: Settings, allow_message_values: bool = False) -> tuple[str, str]:
    """(outcome, Markdown body) of a run's draft, with every secret the configuration knows scrubbed."""
    scrubber = scrubber_for(settings, allow_message_values)
    context = build_context(records, scrubber, settings)
    return context["run"]["outcome"], scrubber.text(render(context, settings.postmortem_templates))


# --- the facts -----------------------------------------------------------------------------------

def utc(moment: dt.datetime | None) -> str:
    """'2026-11-27T05:58:01.123Z' (sorts as it reads)."""
    if moment is None:
        return "unknown"
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def duration(seconds: float) -> str:
    """'2h 03m 09s', '4m 05s', '12.3s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment


def build_context(records: RunRecords, scrubber: Scrubber, settings: Settings) -> dict[str, Any]:
    """Every field the templates may use; all text already scrubbed."""
    entries = [Entry(e.at, e.kind, scrubber.text(e.summary), scrubber.data(e.data)) for e in records.entries]
    start = last(entries, "parameters")
    trigger = (start.data.get("trigger") if start else None) or {}
    run = _run_facts(records, entries, start, scrubber)
    run["prefect_url"] = run_url(settings, records.run_id)
    curated, record = timeline(records, entries, trigger, scrubber)
    return {
        "h": "##",  # the level of the sections' headings (an incident's runs use "###")
        "run": run,
        "trigger": _trigger_facts(trigger, run["requested_by"]),
        "parameters": _parameters(start.data.get("parameters") or {} if start else {}),
        "impact": impact(records, entries, trigger, run["outcome"]),
        "timeline": curated,
        "record": record,
        "decisions": decisions(entries, run["requested_by"]),
        "appendix": _appendix(records, entries, scrubber),
        "entries": [e.to_json() for e in entries],
        "generated": utc(dt.datetime.now(dt.timezone.utc)),
    }


def target_of(entries: list[Entry]) -> str:
    """What the run acts on, as its name says it ('primary/billing'), from the journal's start entry."""
    start = last(entries, "parameters")
    if start is None:
        return ""
    named = re.match(r"^\S+ on (.+?), requested by ", start.summary)  # a start entry without its target field
    return str(start.data.get("target") or (named.group(1) if named else start.summary))


def outcome_of(records: RunRecords, entries: list[Entry]) -> tuple[str, str]:
    """(outcome, one line): from the journal's outcome entry, else from how Prefect saw the run end."""
    recorded = last(entries, "outcome")
    if recorded is not None:
        outcome = recorded.data.get("outcome", "unknown")
        rejection = last(entries, "rejection")
        if outcome == "rejected" and rejection is not None and rejection.data.get("by") == "timeout":
            outcome = "timed out"
        return outcome, recorded.summary
    if records.state_type == "CRASHED" or (records.finished and records.state_type != "COMPLETED"):
        kind = "crashed" if records.state_type == "CRASHED" else records.state_name.lower()
        return kind, (f"the run ended {records.state_name} without recording its outcome"
                      + (f": {records.state_message}" if records.state_message else ""))
    if records.finished:
        return "succeeded", "the run completed without recording its outcome"
    return "in progress", f"the run is {records.state_name}; this draft was written before it ended"


def _run_facts(records: RunRecords, entries: list[Entry], start: Entry | None, scrubber: Scrubber) -> dict[str, Any]:
    outcome, outcome_summary = outcome_of(records, entries)
    began = records.started or (entries[0].at if entries else records.created)
    return {
        "id": records.run_id, "short_id": short_run_id(records.run_id), "name": records.name,
        "runbook": records.runbook, "requested_by": (start.data.get("requested_by") if start else None) or "unknown",
        "target": start.summary if start else "", "started": utc(began), "ended": utc(records.ended),
        "state": records.state_name, "state_message": scrubber.text(records.state_message),
        "finished": records.finished,
        "outcome": outcome, "outcome_summary": outcome_summary,
        "target_name": target_of(entries),
        **_slack_thread(entries),
    }


def _slack_thread(entries: list[Entry]) -> dict[str, str]:
    """Where the run's approval request was posted in Slack: its thread's permalink (chat.getPermalink,
    kept in the journal when posted) and, whether or not there is one, its channel and message."""
    posted = next((e for e in reversed(entries) if e.kind == "slack" and e.data.get("ok") and e.data.get("ts")), None)
    if posted is None:
        return {"slack_thread": "", "slack_message": ""}
    return {"slack_thread": str(posted.data.get("permalink") or ""),
            "slack_message": f"channel {posted.data.get('channel', '')}, message {posted.data['ts']}"}


def _parameters(values: dict[str, Any]) -> list[dict[str, str]]:
    """The parameters that were given (unset options left out), each value as it would be typed."""
    return [{"name": name, "value": value if isinstance(value, str) else json.dumps(value)}
            for name, value in values.items() if value not in (None, False, "", [], {})]


def _trigger_facts(trigger: dict[str, Any], requested_by: str) -> dict[str, Any]:
    is_alert = bool(trigger.get("alertname"))
    return {
        "kind": "alert" if is_alert else "person", "requested_by": requested_by,
        "alertname": trigger.get("alertname", ""), "source": trigger.get("source", ""),
        "status": trigger.get("status", ""), "fingerprint": trigger.get("fingerprint", ""),
        "group_key": str(trigger.get("groupKey") or ""),
        "starts_at": utc(_parse_time(trigger.get("startsAt"))) if trigger.get("startsAt") else "",
        "generator_url": trigger.get("generatorURL") or "",
        "labels": [{"name": k, "value": v} for k, v in sorted((trigger.get("labels") or {}).items())],
        "annotations": [{"name": k, "value": v} for k, v in sorted((trigger.get("annotations") or {}).items())],
    }


def _plan_lag(plan: dict[str, Any]) -> tuple[int, int] | None:
    """(lag before, lag after applying) summed over the plan's partitions, when the plan has offsets."""
    partitions = [p for p in plan.get("partitions") or [] if isinstance(p, dict)]
    if not partitions or not all({"target", "log_end"} <= set(p) for p in partitions):
        return None
    before = sum(p["log_end"] - p["current"] for p in partitions if p.get("current") is not None)
    after = sum(p["log_end"] - p["target"] for p in partitions)
    return before, after


def impact(records: RunRecords, entries: list[Entry], trigger: dict[str, Any], outcome: str) -> list[dict[str, str]]:
    """The measured impact, one row per measure with the record it comes from."""
    rows: list[dict[str, str]] = []

    def add(measure: str, value: Any, source: str) -> None:
        rows.append({"measure": measure, "value": str(value), "source": source})

    plan_entry, rollback = last(entries, "plan"), last(entries, "rollback")
    plan = plan_entry.data if plan_entry else {}
    applied = outcome == "succeeded" and last(entries, "action") is not None
    restored = rollback is not None and rollback.data.get("restored") is True
    if restored:
        unapplied = "restored from the snapshot"
    elif rollback is not None:
        unapplied = "the restore failed: see the appendix to restore by hand"
    else:
        unapplied = "nothing was changed"
    lag = _plan_lag(plan)
    if lag is not None:
        partitions = len(plan["partitions"])
        add("consumer lag before (at plan time)", f"{lag[0]} message(s) over {partitions} partition(s)", "plan")
        after = (f"{lag[1]} message(s), offsets read back as planned" if applied and last(entries, "verification")
                 else f"{lag[0]} message(s): {unapplied}")
        add("consumer lag after (log end at plan time)", after, "verification" if applied else "plan, rollback")
    for measure, key in (("messages replayed", "messages_replayed"), ("messages skipped", "messages_skipped")):
        if key in plan:
            add(measure, plan[key] if applied else f"0 (planned {plan[key]}; {unapplied})", "plan, outcome")
    moved = [e.data["moved"] for e in entries if e.kind == "action" and isinstance(e.data.get("moved"), int)]
    if moved:
        add("messages moved", sum(moved), "actions")
    if rollback is not None and "offsets_restored" in rollback.data:
        add("offsets restored from the snapshot", rollback.data["offsets_restored"], "rollback")
    add("data at risk", _data_at_risk(entries, plan, applied), "plan, rollback")
    _add_timings(add, records, entries, trigger, outcome)
    return rows


def _data_at_risk(entries: list[Entry], plan: dict[str, Any], applied: bool) -> str:
    risks = [f"{e.data['data_at_risk']}" for e in entries if e.data.get("data_at_risk") not in (None, "", 0)]
    if isinstance(plan.get("messages_at_risk"), int) and plan["messages_at_risk"] > 0:
        exact = "exact" if plan.get("at_risk_exact") else "an estimate"
        risks.append(f"{plan['messages_at_risk']} message(s) at risk when planned ({exact})")
    if applied and plan.get("messages_skipped"):
        risks.append(f"{plan['messages_skipped']} message(s) skipped: the group will not consume them")
    rollback = last(entries, "rollback")
    if rollback is not None and rollback.data.get("had_no_offset_before"):
        kept = rollback.data["had_no_offset_before"]
        risks.append(f"{len(kept)} partition(s) had no committed offset before and keep the new one ({', '.join(kept[:10])})")
    if rollback is not None and rollback.data.get("restored") is False:
        risks.append("the snapshot was not restored: offsets may be part-way")
    return "; ".join(risks) or "none recorded"


def _add_timings(add, records: RunRecords, entries: list[Entry], trigger: dict[str, Any], outcome: str) -> None:
    began = records.started or (entries[0].at if entries else records.created)
    alert_start = _parse_time(trigger.get("startsAt"))
    resolved = last(entries, "alert_resolved")
    verification = last(entries, "verification")
    recovered, how = None, ""
    if resolved is not None and _parse_time(resolved.data.get("endsAt")):
        recovered, how = _parse_time(resolved.data["endsAt"]), "alert resolved"
    elif outcome == "succeeded" and verification is not None:
        recovered, how = verification.at, "verified"
    origin, origin_name = (alert_start, "the alert's start") if alert_start else (began, "the run's start")
    if recovered is not None:
        add(f"time from {origin_name} to recovery", f"{duration((recovered - origin).total_seconds())} "
            f"({utc(origin)} to {utc(recovered)}, {how})", "alert, journal" if alert_start else "Prefect, journal")
    else:
        add(f"time from {origin_name} to recovery", f"not recovered by this run (outcome: {outcome})", "journal")
    requested = last(entries, "approval_requested")
    answer = next((e for e in entries if requested and e.at >= requested.at and e.kind in ("approval", "rejection")), None)
    if requested is not None and answer is not None:
        add("time waiting for approval", duration((answer.at - requested.at).total_seconds()), "journal")
    concluded = last(entries, "outcome")
    if records.ended is not None:
        add("run duration", duration((records.ended - began).total_seconds()), "Prefect flow run")
    elif concluded is not None:
        add("run duration (to its outcome)", duration((concluded.at - began).total_seconds()), "journal")


# What a person reads in the timeline: the alert, the run's start, each plan, each question and answer,
# the snapshot, each change, verify, a restore, an error, the outcome and the alert resolving. The rest
# (Prefect's state changes, task runs, warnings, locks, observations, notes, Slack) is in the full record.
CURATED_KINDS = ("parameters", "plan", "approval_requested", "approval", "approval_refused", "rejection",
                 "snapshot", "action", "verification", "rollback", "error", "outcome", "alert_resolved")
_LABELS_SHOWN = 4


def alert_fired(trigger: dict[str, Any]) -> str:
    """'alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup=billing)': the alert with the
    labels that tell its occurrences apart (severity and alertname left out)."""
    labels = {k: v for k, v in sorted((trigger.get("labels") or {}).items()) if k not in ("alertname", "severity")}
    shown = ", ".join(f"{k}={v}" for k, v in list(labels.items())[:_LABELS_SHOWN])
    more = f", +{len(labels) - _LABELS_SHOWN}" if len(labels) > _LABELS_SHOWN else ""
    return f"alert {trigger.get('alertname', '')} fired" + (f" ({shown}{more})" if shown else "")


def timeline(records: RunRecords, entries: list[Entry], trigger: dict[str, Any],
             scrubber: Scrubber) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(the timeline, the full record): both oldest first, each line with its source. The timeline
    holds what people read (CURATED_KINDS, the alert firing and resolving, and the run's final state
    when the journal has no outcome, as for a crash); the full record holds everything, Prefect's
    state changes, task runs and warnings too."""
    curated: list[tuple[dt.datetime, str, str]] = []
    every: list[tuple[dt.datetime, str, str]] = []
    fired = _parse_time(trigger.get("startsAt"))
    if fired is not None:
        curated.append((fired, "alert", alert_fired(trigger)))
    for entry in entries:
        ended = _parse_time(entry.data.get("endsAt")) if entry.kind == "alert_resolved" else None
        row = (ended, "alert", entry.summary) if ended is not None else (entry.at, "journal",
                                                                           f"{entry.kind}: {entry.summary}")
        (curated if entry.kind in CURATED_KINDS else every).append(row)
    flow_states = [change for change in records.states if change.task is None]
    for change in records.states:
        message = f": {_short(scrubber.text(change.message))}" if change.message else ""
        if change.task is None:
            every.append((change.at, "Prefect flow run", f"state {change.name}{message}"))
        else:
            every.append((change.at, "Prefect task run", f"{change.task} {change.name}{message}"))
    for line in records.notable_logs:
        first_line = line.message.strip().splitlines()[0] if line.message.strip() else ""
        every.append((line.at, "Prefect log", f"{line.level} {_short(scrubber.text(first_line))}"))
    every += curated
    if last(entries, "outcome") is None and records.finished and flow_states:  # its state change is in `every`
        final = flow_states[-1]
        message = f": {_short(scrubber.text(final.message))}" if final.message else ""
        curated.append((final.at, "Prefect flow run", f"ended {final.name}{message}"))

    def rows(found: list[tuple[dt.datetime, str, str]]) -> list[dict[str, str]]:
        return [{"at": utc(at), "source": source, "event": event}
                for at, source, event in sorted(found, key=lambda row: row[0])]
    return rows(curated), rows(every)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decisions(entries: list[Entry], requested_by: str) -> dict[str, Any]:
    """Who decided what (people) and what the automation did, each with its time."""
    people: list[dict[str, str]] = []
    automation: list[dict[str, str]] = []
    start = last(entries, "parameters")
    if start is not None:
        if requested_by.startswith("alert:"):
            automation.append({"at": utc(start.at), "what": f"started the run for {requested_by}"})
        else:
            people.append({"at": utc(start.at), "who": requested_by, "decision": "started the run", "comment": ""})
    for entry in entries:
        data = entry.data
        if entry.kind == "approval":
            people.append({"at": utc(entry.at), "who": str(data.get("by", "")), "decision": "approved",
                           "comment": str(data.get("comment") or "")})
        elif entry.kind == "rejection" and data.get("by") == "timeout":
            automation.append({"at": utc(entry.at), "what": entry.summary})
        elif entry.kind == "rejection":
            people.append({"at": utc(entry.at), "who": str(data.get("by", "")), "decision": "rejected",
                           "comment": str(data.get("comment") or "")})
        elif entry.kind == "approval_refused":
            verb = "approve" if data.get("approved", True) else "reject"
            people.append({"at": utc(entry.at), "who": str(data.get("by", "")),
                           "decision": f"tried to {verb}; the gate refused", "comment": entry.summary})
        elif entry.kind in AUTOMATION_KINDS:
            automation.append({"at": utc(entry.at), "what": f"{entry.kind}: {entry.summary}"})
    return {"people": people, "automation": automation}


APPENDIX_ROWS = 200  # lines of a plan's or a snapshot's table in the postmortem; the rest is one command away


def _first_lines(text: str, limit: int, where_the_rest_is: str) -> str:
    """The first `limit` lines of `text`, and a last line saying how many more there are and where
    they are: a draft stays a document people read (and Prefect takes as an artifact) whatever the
    size of the plan; a plan of 100,000 entries made a draft of 7 MB that Prefect refused."""
    lines = text.splitlines()
    if len(lines) <= limit:
        return text
    return "\n".join(lines[:limit] + ["", f"... and {len(lines) - limit:,} more line(s): {where_the_rest_is}"])


def _appendix(records: RunRecords, entries: list[Entry], scrubber: Scrubber) -> dict[str, Any]:
    plans = [e for e in entries if e.kind == "plan"]
    plan = plans[-1].data if plans else {}
    snapshot = last(entries, "snapshot")
    whole_plan = f"`runbook status {records.run_id} --plan` shows the whole plan"
    saved = str(snapshot.data.get("path") or "") if snapshot else ""
    whole_snapshot = f"the snapshot file {saved} holds all of it" if saved else "the run's journal holds all of it"
    return {
        "plan": {"present": bool(plans), "count": len(plans),
                 "csv": _first_lines(str(plan.get("csv") or ""), APPENDIX_ROWS, whole_plan),
                 "markdown": _first_lines(str(plan.get("markdown") or ""), APPENDIX_ROWS, whole_plan),
                 "digest": str(plan.get("digest") or "")},
        "snapshot": {"present": snapshot is not None, "summary": snapshot.summary if snapshot else "",
                     "path": saved,
                     "csv": _first_lines(str(snapshot.data.get("csv") or "") if snapshot else "", APPENDIX_ROWS,
                                         whole_snapshot),
                     "restore_command": str(snapshot.data.get("restore_command") or "") if snapshot else ""},
        "log": {"total": records.log_lines, "shown": len(records.log_tail),
                "lines": [f"{utc(line.at)} {line.level:<7} {line.logger} | {_short(scrubber.text(line.message), 2000)}"
                          for line in records.log_tail]},
    }
