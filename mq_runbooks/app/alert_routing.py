"""From alerts to runs: match each firing alert against the catalog's triggers, map its labels and
annotations onto the runbook's parameters, and start one run per alert occurrence.

Every alert ends in exactly one bucket of the result, with its reason:
started, deduplicated (that occurrence already has its run), not_started (the mapping or the
parameters failed: e.g. "label consumergroup is missing"), unmatched (no trigger matches), or
resolved (a resolved notification, recorded in the journal of the run it started).
When the Prefect server cannot record a run, `route` raises UnreachableError instead: the whole
notification is refused (503) and sent again by Alertmanager; the occurrences it did start are
answered as deduplicated then (idempotency keys).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2

from mq_runbooks.base.catalog import Catalog, compiled, Runbook, Trigger, refuse_file_parameters
from mq_runbooks.base.errors import RunbookError, UnreachableError
from mq_runbooks.integrations.alerts import Alert
from mq_runbooks.kit.records import AlertResolved

log = logging.getLogger("runbook.alerts")

# (runbook, params, requested_by, trigger, idempotency_key, tags) -> (run_id, deduplicated)
Starter = Callable[..., tuple[str, bool]]
# (occurrence tag) -> run ids carrying it
RunFinder = Callable[[str], list[str]]
# (run_id, kind, summary, data) -> None
Recorder = Callable[..., Any]
# (occurrence key) -> the run this process already started for it, or None
Known = Callable[[str], "str | None"]


class MissingField(RunbookError):
    """A trigger's template refers to a label or annotation the alert does not have."""


@dataclass
class RoutingResult:
    started: list[dict[str, Any]] = field(default_factory=list)
    deduplicated: list[dict[str, Any]] = field(default_factory=list)
    not_started: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("started", "deduplicated", "not_started", "unmatched", "resolved")}


_MISSING = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined")


def render_parameters(trigger: Trigger, alert: Alert) -> dict[str, str]:
    """The runbook parameters a trigger maps from an alert; MissingField names what is absent."""
    context = {"labels": alert.labels, "annotations": alert.annotations, "status": alert.status,
               "startsAt": alert.starts_at.isoformat(), "fingerprint": alert.fingerprint,
               "generatorURL": alert.generator_url}
    params: dict[str, str] = {}
    for name, template in trigger.params.items():
        try:
            params[name] = compiled(template).render(**context).strip()
        except jinja2.UndefinedError as exc:
            match = _MISSING.search(str(exc))
            missing = (match.group(1) or match.group(2)) if match else str(exc)
            where = "annotation" if "annotations." + missing in template else "label"
            raise MissingField(f"not started because {where} {missing!r} is missing (needed for parameter {name})") from None
        except jinja2.TemplateError as exc:
            raise MissingField(f"not started: the template of parameter {name} failed: {exc}") from None
        if params[name] == "":
            raise MissingField(f"not started because parameter {name} rendered empty from {template!r}")
    return params


def matching_triggers(catalog: Catalog, alert: Alert) -> list[tuple[Runbook, Trigger]]:
    """The first matching trigger of each runbook (a runbook starts at most once per alert)."""
    found = []
    for runbook in catalog:
        trigger = next((t for t in runbook.triggers if t.matches(alert.labels)), None)
        if trigger is not None:
            found.append((runbook, trigger))
    return found


def _summary(alert: Alert) -> dict[str, Any]:
    return {"alertname": alert.name, "fingerprint": alert.fingerprint, "startsAt": alert.starts_at.isoformat()}


def answer_from_memory(alerts: list[Alert], catalog: Catalog, known: Known) -> RoutingResult | None:
    """The result of a notification whose alerts all match nothing or are firing occurrences this
    process already started (Alertmanager's repeats): nothing to write, so no thread and no Prefect.
    None when any alert needs `route`."""
    result = RoutingResult()
    for alert in alerts:
        if alert.status == "resolved":
            return None
        matches = matching_triggers(catalog, alert)
        if not matches:
            result.unmatched.append(_summary(alert))
        for runbook, _ in matches:
            run_id = known(alert.occurrence_key(runbook.id))
            if run_id is None:
                return None
            result.deduplicated.append({**_summary(alert), "runbook": runbook.id, "run_id": run_id})
    for item in result.unmatched:
        log.info("alert %s (%s) matches no runbook trigger", item["alertname"], item["fingerprint"])
    return result


def route(alerts: list[Alert], catalog: Catalog, start: Starter, find_runs: RunFinder, record: Recorder,
          occurrence_tag: Callable[[str], str],
          on_resolved: Callable[[str], Any] = lambda run_id: None,
          known: Known = lambda key: None) -> RoutingResult:
    result = RoutingResult()
    for alert in alerts:
        summary = _summary(alert)
        matches = matching_triggers(catalog, alert)
        if not matches:
            log.info("alert %s (%s) matches no runbook trigger", alert.name, alert.fingerprint)
            result.unmatched.append(summary)
            continue
        for runbook, trigger in matches:
            key = alert.occurrence_key(runbook.id)
            entry = {**summary, "runbook": runbook.id}
            if alert.status == "resolved":
                runs = find_runs(occurrence_tag(key))
                for run_id in runs:
                    ended = alert.ends_at.isoformat() if alert.ends_at else "now"
                    record(run_id, AlertResolved(summary=f"alert {alert.name} resolved at {ended}",
                                                 alertname=alert.name, endsAt=ended, fingerprint=alert.fingerprint))
                    on_resolved(run_id)
                result.resolved.append({**entry, "runs": runs})
                continue
            run_id = known(key)
            if run_id is not None:  # a repeat of an occurrence this process started: no parameters to map
                result.deduplicated.append({**entry, "run_id": run_id})
                continue
            try:
                raw = render_parameters(trigger, alert)
                refuse_file_parameters(runbook, raw, "an alert")
                params = runbook.validate_parameters(raw)
                run_id, existed = start(runbook, params, requested_by=f"alert:{alert.name}",
                                        trigger=alert.to_trigger(), idempotency_key=key,
                                        tags=[occurrence_tag(key)])
            except UnreachableError:
                raise  # nothing recorded: the notification is not acknowledged, and its sender retries
            except RunbookError as exc:
                log.warning("alert %s not started for %s: %s", alert.name, runbook.id, exc)
                result.not_started.append({**entry, "reason": str(exc)})
                continue
            (result.deduplicated if existed else result.started).append({**entry, "run_id": run_id})
    return result
