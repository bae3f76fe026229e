"""Drafting a run's postmortem: one run's own draft, or the shared draft of the incident its alert
belongs to (incident.py). The context both render from is context.py's."""
from __future__ import annotations

from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.postmortem.context import render_draft, target_of
from mq_runbooks.kit.postmortem.incident import draft_incident, incident_of
from mq_runbooks.kit.postmortem.records import read_records
from mq_runbooks.kit.postmortem.store import Postmortem, save_draft


def draft_postmortem(settings: Settings, run_id: str, allow_message_values: bool = False) -> tuple[Postmortem, bool]:
    """Write or refresh the draft of a run in settings.postmortem_dir; (the postmortem, whether written).

    A run started by an alert of an incident (incident.py) shares one draft with the
    incident's other runs. A reviewed postmortem is left as it is (written False). Raises
    NotFoundError for an unknown run and ConfigError when a template refers to a field the draft
    does not have.
    """
    records = read_records(run_id)
    incident = incident_of(records.entries)
    if incident:
        return draft_incident(settings, incident, records, allow_message_values)
    outcome, body = render_draft(records, settings, allow_message_values)
    target = target_of(records.entries)
    return save_draft(settings.postmortem_dir, records.runbook, records.run_id, outcome, body,
                      targets=[target] if target else [])
