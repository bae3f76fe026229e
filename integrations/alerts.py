"""Alert webhook payloads: Alertmanager's (version 4) and Grafana alerting's, read into one shape.

Both send a group of alerts, each with status (firing|resolved), labels, annotations, startsAt,
endsAt and a fingerprint. Wrong shapes raise `PayloadError` naming every invalid field, so the HTTP
edge can answer 400/422 with the reason instead of failing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mq_runbooks.base.json_limits import TooDeep, loads_limited


class PayloadError(ValueError):
    """The body is not a valid webhook payload; the message lists each problem."""


class _Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: dt.datetime
    endsAt: dt.datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class _AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[_Alert] = Field(min_length=1)


class _GrafanaPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    orgId: int | None = None
    title: str = ""
    externalURL: str = ""
    alerts: list[_Alert] = Field(min_length=1)


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, as the router sees it."""

    source: str  # "alertmanager" or "grafana"
    status: str  # "firing" or "resolved"
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    fingerprint: str
    generator_url: str = ""
    receiver: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    group_key: str = ""  # the notification's alert group (Alertmanager's groupKey), if it says
    incident: str = ""  # one incident: the alerts of one group that fired together (see `incident_key`)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "(no alertname)")

    def occurrence_key(self, runbook_id: str) -> str:
        """The identity of one occurrence of this alert for one runbook: repeats of the same
        notification, from any replica, share it; a new firing (new startsAt) does not."""
        raw = f"{runbook_id}|{self.fingerprint}|{self.starts_at.astimezone(dt.timezone.utc).isoformat()}"
        return hashlib.sha256(raw.encode()).hexdigest()

    def to_trigger(self) -> dict[str, Any]:
        """What the run records about the alert that started it."""
        return {
            "source": self.source, "alertname": self.name, "status": self.status, "labels": self.labels,
            "annotations": self.annotations, "startsAt": self.starts_at.isoformat(),
            "fingerprint": self.fingerprint, "generatorURL": self.generator_url, "receiver": self.receiver,
            "groupKey": self.group_key, "incident": self.incident,
        }


def incident_key(source: str, receiver: str, group_key: str, fingerprint: str, group_started: dt.datetime) -> str:
    """The identity of the incident an alert belongs to, the same in every notification about it.

    With a group key: the group and when its earliest alert in the notification started, so the
    alerts of one group that fire together (and the runs they start) are one incident, while the
    same group firing again days later is another. Without one: the alert occurrence itself."""
    moment = group_started.astimezone(dt.timezone.utc).isoformat()
    raw = f"{source}|{receiver}|{group_key}|{moment}" if group_key else f"{source}|{fingerprint}|{moment}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint is a hash of the label set; use ours when a sender leaves it out."""
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def _problems(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ())) or "(body)"
        lines.append(f"{location}: {error.get('msg')}")
    return "; ".join(lines[:20])


def _parse(body: bytes, model: type[BaseModel], source: str) -> list[Alert]:
    try:
        document = loads_limited(body)
    except TooDeep as exc:
        raise PayloadError(f"the body is refused: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PayloadError(f"a {source} webhook body is a JSON object with an 'alerts' list")
    try:
        payload = model.model_validate(document)
    except ValidationError as exc:
        raise PayloadError(f"not a {source} webhook payload: {_problems(exc)}") from None
    receiver, group_key = getattr(payload, "receiver", ""), getattr(payload, "groupKey", "")
    alerts = []
    for alert in payload.alerts:
        starts_at = alert.startsAt if alert.startsAt.tzinfo else alert.startsAt.replace(tzinfo=dt.timezone.utc)
        fingerprint = alert.fingerprint or _fingerprint(alert.labels)
        alerts.append(Alert(source=source, status=alert.status, labels=alert.labels, annotations=alert.annotations,
                            starts_at=starts_at, ends_at=alert.endsAt, fingerprint=fingerprint,
                            generator_url=alert.generatorURL, receiver=receiver, group_key=group_key))
    group_started = min(alert.starts_at for alert in alerts)
    return [replace(alert, incident=incident_key(source, receiver, group_key, alert.fingerprint,
                                                 group_started if group_key else alert.starts_at))
            for alert in alerts]


def parse_alertmanager(body: bytes) -> list[Alert]:
    """The alerts of an Alertmanager webhook notification (payload version 4)."""
    return _parse(body, _AlertmanagerPayload, "alertmanager")


def parse_grafana(body: bytes) -> list[Alert]:
    """The alerts of a Grafana alerting webhook notification."""
    return _parse(body, _GrafanaPayload, "grafana")
