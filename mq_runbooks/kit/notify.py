"""What a run tells Slack: the approval message with its buttons, who decided (or the timeout),
and its progress in that message's thread. Slack is optional and never in the way: if it is not
configured nothing is sent; if it cannot be reached, the journal says so and the gate still
works from the CLI (`runbook approve|reject`, directly or through serve).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal
from mq_runbooks.kit.records import SlackMessage
from mq_runbooks.integrations.slack import SlackNotifier, SlackUnavailable
from mq_runbooks.integrations.slack_blocks import ApprovalRequest

# Journal entries worth a line in the run's Slack thread.
THREAD_KINDS = {"action", "verification", "rollback", "error", "outcome", "alert_resolved", "postmortem"}


def run_url(settings: Settings, run_id: str) -> str:
    base = settings.prefect_api_url.rstrip("/").removesuffix("/api")
    return f"{base}/runs/flow-run/{run_id}"


def trigger_summary(requested_by: str, trigger: Mapping[str, Any] | None) -> str:
    trigger = trigger or {}
    if trigger.get("restore_of"):
        return f"restore of run {trigger['restore_of']}, asked by {requested_by} ({trigger.get('source') or 'cli'})"
    if trigger.get("source") in {"alertmanager", "grafana"}:
        labels = trigger.get("labels") or {}
        shown = ", ".join(f"{k}={v}" for k, v in labels.items() if k != "alertname")
        return f"alert {trigger.get('alertname')} ({shown}) since {trigger.get('startsAt')}, via {trigger['source']}"
    if trigger.get("source") == "slack":
        return f"/runbook in Slack by {requested_by}"
    return f"started by {requested_by} from the CLI"


class GateObserver:
    """Hooks the gate calls; the default does nothing (no Slack configured)."""

    def requested(self, plan_markdown: str, plan_digest: str, approvers: str) -> None: ...

    def resumed(self, entries: Sequence[journal.Entry], plan_markdown: str, plan_digest: str, approvers: str) -> None:
        """The run was executed again after its gate suspended (an answer came): the request was
        already sent, in an earlier execution whose journal is `entries`."""

    def approved_so_far(self, by: Sequence[str]) -> None: ...

    def decided(self, approved: bool, by: Sequence[str], comment: str) -> None: ...

    def timed_out(self, waited_s: float) -> None: ...


class SlackRun(GateObserver):
    """The Slack messages of one run."""

    def __init__(self, slack: SlackNotifier, settings: Settings, run_id: str, runbook_id: str, runbook_title: str,
                 requested_by: str, trigger: Mapping[str, Any] | None, channel: str | None = None):
        self.slack, self.run_id = slack, run_id
        self.channel = channel or slack.channel
        self.ts: str | None = None
        self.request = ApprovalRequest(
            runbook_id=runbook_id, runbook_title=runbook_title, run_id=run_id, run_url=run_url(settings, run_id),
            requested_by=requested_by, trigger=trigger_summary(requested_by, trigger), plan_markdown="",
        )
        journal.add_listener(self._mirror)

    def _safely(self, what: str, call) -> Any:
        """`call()`, or None when Slack failed it (or answered oddly): journalled, the run goes on."""
        try:
            return call()
        except SlackUnavailable as exc:
            journal.write(self.run_id, SlackMessage(summary=f"Slack trouble ({what}): {exc}; the gate still answers "
                                                            "`runbook approve|reject`", ok=False))
            return None

    def requested(self, plan_markdown: str, plan_digest: str, approvers: str) -> None:
        self.request = ApprovalRequest(**{**self.request.__dict__, "plan_markdown": plan_markdown,
                                          "plan_digest": plan_digest, "approvers": approvers})
        posted = self._safely("posting the approval request",
                              lambda: self.slack.post_approval_request(self.request, channel=self.channel))
        if posted:
            self.channel, self.ts = posted
            journal.write(self.run_id, SlackMessage(
                summary=f"approval request posted to Slack channel {self.channel}", ok=True,
                data={"channel": self.channel, "ts": self.ts, "permalink": self._permalink()}))

    def _permalink(self) -> str:
        """The thread's link for the postmortem; "" when Slack will not say (journalled as Slack
        trouble; the draft then names the channel and message instead)."""
        return self._safely("reading the approval message's link",
                            lambda: self.slack.permalink(self.channel, self.ts)) or ""

    def resumed(self, entries: Sequence[journal.Entry], plan_markdown: str, plan_digest: str, approvers: str) -> None:
        self.request = ApprovalRequest(**{**self.request.__dict__, "plan_markdown": plan_markdown,
                                          "plan_digest": plan_digest, "approvers": approvers})
        posted = [e for e in entries if e.kind == "slack" and e.data.get("ts")]
        if posted:
            self.channel, self.ts = posted[-1].data.get("channel") or self.channel, posted[-1].data["ts"]

    def approved_so_far(self, by: Sequence[str]) -> None:
        if self.ts:
            self._safely("updating the approval request",
                         lambda: self.slack.update_approval_request(self.channel, self.ts, self.request, by))

    def decided(self, approved: bool, by: Sequence[str], comment: str) -> None:
        if self.ts:
            self._safely("recording the decision", lambda: self.slack.update_decision(
                self.channel, self.ts, self.request, approved=approved, by=by,
                at=dt.datetime.now(dt.timezone.utc), comment=comment))

    def timed_out(self, waited_s: float) -> None:
        if self.ts:
            self._safely("recording the timeout", lambda: self.slack.update_timeout(
                self.channel, self.ts, self.request, waited=f"{waited_s:.0f}s", at=dt.datetime.now(dt.timezone.utc)))

    def _mirror(self, run_id: str, entry: journal.Entry) -> None:
        """Progress of this run, as replies in the approval message's thread."""
        if run_id != self.run_id or self.ts is None or entry.kind not in THREAD_KINDS:
            return
        self._safely(f"posting {entry.kind}", lambda: self.slack.post_in_thread(
            self.channel, self.ts, f"*{entry.kind}*: {entry.summary}"))


def slack_notifier(settings: Settings) -> SlackNotifier | None:
    if settings.slack_bot_token is None or not settings.slack_channel:
        return None
    return SlackNotifier(settings.slack_bot_token.get_secret_value(), settings.slack_api_url, settings.slack_channel)


def observer_for(settings: Settings, run_id: str, runbook_id: str, runbook_title: str, requested_by: str,
                 trigger: Mapping[str, Any] | None) -> GateObserver:
    slack = slack_notifier(settings)
    if slack is None:
        return GateObserver()
    channel = (trigger or {}).get("channel") if (trigger or {}).get("source") == "slack" else None
    return SlackRun(slack, settings, run_id, runbook_id, runbook_title, requested_by, trigger, channel)
