"""Prometheus metrics of one `runbook serve` process (each replica is scraped on its own)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.alerts_received = Counter("runbook_alerts_received", "Alerts received, by source and status",
                                       ["source", "status"], registry=self.registry)
        self.alerts_matched = Counter("runbook_alerts_matched", "Firing alerts that matched a runbook trigger",
                                      ["runbook"], registry=self.registry)
        self.alerts_deduplicated = Counter("runbook_alerts_deduplicated",
                                           "Alert notifications whose occurrence already had a run",
                                           ["runbook"], registry=self.registry)
        self.alerts_rejected = Counter("runbook_alerts_rejected",
                                       "Alert requests or alerts refused (bad payload, auth, bad parameters)",
                                       ["reason"], registry=self.registry)
        self.alerts_unmatched = Counter("runbook_alerts_unmatched", "Alerts that matched no trigger",
                                        ["alertname"], registry=self.registry)
        self.runs_started = Counter("runbook_runs_started", "Runs started, by runbook and how",
                                    ["runbook", "via"], registry=self.registry)
        self.approval_wait = Histogram("runbook_approval_wait_seconds", "Time from approval request to decision",
                                       ["runbook", "decision"], registry=self.registry,
                                       buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600))
        self.slack_requests = Counter("runbook_slack_requests", "Slack requests to our endpoints, by outcome",
                                      ["kind", "outcome"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
