"""Prometheus metrics of one `runbook serve` process (each replica is scraped on its own)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
        # Without the alertname: names come from outside and would add a series each (the webhook's
        # answer and the log name the unmatched alerts).
        self.alerts_unmatched = Counter("runbook_alerts_unmatched", "Alerts that matched no trigger",
                                        registry=self.registry)
        self.runs_started = Counter("runbook_runs_started", "Runs started, by runbook and how",
                                    ["runbook", "via"], registry=self.registry)
        self.approval_wait = Histogram("runbook_approval_wait_seconds", "Time from approval request to decision",
                                       ["runbook", "decision"], registry=self.registry,
                                       buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600))
        self.slack_requests = Counter("runbook_slack_requests", "Slack requests to our endpoints, by outcome",
                                      ["kind", "outcome"], registry=self.registry)

    def watch_runs(self, recent_runs: Callable[[], list[dict]]) -> None:
        """Expose the outcome and duration of recently finished runs, read from the Prefect server
        at each scrape (so every replica reports the same, and nothing is kept here)."""
        self.registry.register(_RecentRuns(recent_runs))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RecentRuns(Collector):
    def __init__(self, recent_runs: Callable[[], list[dict]]):
        self.recent_runs = recent_runs

    def collect(self) -> Iterable[GaugeMetricFamily]:
        outcomes = GaugeMetricFamily("runbook_recent_runs", "Runs that ended in the last 24 h (at most the newest 200), by runbook and state",
                                     labels=["runbook", "state"])
        durations = GaugeMetricFamily("runbook_recent_run_duration_seconds_max",
                                      "Longest run that ended in the last 24 h, by runbook", labels=["runbook"])
        try:
            runs = self.recent_runs()
        except Exception:  # noqa: BLE001  (Prefect unreachable: these metrics are absent, the rest still render)
            return []
        counts: dict[tuple[str, str], int] = {}
        longest: dict[str, float] = {}
        for run in runs:
            counts[(run["runbook"], run["state"])] = counts.get((run["runbook"], run["state"]), 0) + 1
            longest[run["runbook"]] = max(longest.get(run["runbook"], 0.0), run["duration_s"])
        for (runbook, state), count in sorted(counts.items()):
            outcomes.add_metric([runbook, state], count)
        for runbook, seconds in sorted(longest.items()):
            durations.add_metric([runbook], seconds)
        return [outcomes, durations]
