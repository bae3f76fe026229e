"""One postmortem per incident: the runs that one Alertmanager notification's alert group started share
one draft (each run a section, one timeline); a run started by hand keeps its own. Every draft links
the run's Slack thread (chat.getPermalink, kept in the journal when the approval request was posted)
and, once Prefect has set the run's final state, says that state."""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path

import pytest

from mq_runbooks.app import runs, starts
from mq_runbooks.integrations.alerts import parse_alertmanager
from mq_runbooks.kit import journal
from mq_runbooks.kit.postmortem.store import list_postmortems, parse
from tests.flows.runbook_harness import paused, runbook_env, wait_until  # noqa: F401 (fixture)
from tests.flows.test_kafka_replay import finished
from tests.flows.test_postmortem_runs import section, table_rows, topic_and_groups_at_end, wait_for_text
from tests.slack_fake import PERMALINK_BASE, SlackFake


@pytest.fixture
def slack():
    fake = SlackFake.start()
    yield fake
    fake.stop()


def notification(groups: list[str], fired: dt.datetime, group_key: str = '{}:{alertname="KafkaConsumerGroupStuck"}'):
    """An Alertmanager notification of one alert group: one alert per consumer group."""
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "runbook", "groupKey": group_key,
        "alerts": [{"status": "firing", "labels": {"alertname": "KafkaConsumerGroupStuck", "cluster": "primary",
                                                   "consumergroup": group},
                    "startsAt": (fired + dt.timedelta(seconds=i)).isoformat(), "fingerprint": f"f{i}"}
                   for i, group in enumerate(groups)],
    }).encode()


def test_the_alerts_of_one_group_firing_together_are_one_incident():
    fired = dt.datetime(2026, 11, 29, 20, 0, tzinfo=dt.timezone.utc)
    first, second = parse_alertmanager(notification(["a", "b"], fired))
    assert first.incident == second.incident and re.fullmatch(r"[0-9a-f]{32}", first.incident)
    assert first.to_trigger()["incident"] == first.incident and first.to_trigger()["groupKey"]
    # The same group firing again later is another incident; so is another group.
    assert parse_alertmanager(notification(["a"], fired + dt.timedelta(days=2)))[0].incident != first.incident
    assert parse_alertmanager(notification(["a"], fired, group_key="{}:{x}"))[0].incident != first.incident
    # Without a group key, each alert occurrence is its own incident.
    alone = parse_alertmanager(notification(["a", "b"], fired, group_key=""))
    assert alone[0].incident != alone[1].incident


def test_runs_of_one_incident_share_one_draft_with_their_slack_threads(clusters, runbook_env, slack, tmp_path):
    config = clusters.kafka_cluster("primary").client_config()
    made = topic_and_groups_at_end(config, ("first", "second", "by-hand"))
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_POSTMORTEM_DIR=str(tmp_path / "postmortems"),
                                    RUNBOOK_SLACK_BOT_TOKEN=slack.token, RUNBOOK_SLACK_API_URL=slack.url,
                                    RUNBOOK_SLACK_CHANNEL="C0ONCALL")
    runbook = catalog.get("kafka-replay")
    fired = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=2)
    alerts = parse_alertmanager(notification([made["first"][1], made["second"][1]], fired))

    def start(group, requested_by, trigger=None):
        params = runbook.validate_parameters({"cluster": "primary", "group": group, "to_earliest": "true"})
        return starts.start_run(settings, runbook, params, requested_by=requested_by, trigger=trigger)

    ids = [start(made[name][1], "alert:KafkaConsumerGroupStuck", alert.to_trigger())
           for name, alert in zip(("first", "second"), alerts)]
    by_hand = start(made["by-hand"][1], "alice")
    for run_id in [*ids, by_hand]:
        wait_until(run_id, paused, timeout=90)
        runs.answer_gate(settings, catalog, run_id, True, "carol", "go")
    views = {run_id: wait_until(run_id, finished, timeout=90) for run_id in [*ids, by_hand]}
    assert all(view.succeeded for view in views.values()), [v.message for v in views.values()]

    threads = {}
    for run_id, view in views.items():
        posted = journal.last(view.entries, "slack")
        assert posted.data["channel"] == "C0ONCALL"
        threads[run_id] = f"{PERMALINK_BASE}/archives/C0ONCALL/p{posted.data['ts'].replace('.', '')}"
        assert posted.data["permalink"] == threads[run_id]

    # The incident's runs name one file; once both are final, it says so for each.
    paths = {Path(journal.last(views[run_id].entries, "postmortem").data["path"]) for run_id in ids}
    assert len(paths) == 1, paths
    path = paths.pop()
    assert path.stem.endswith("-kafka-replay-" + alerts[0].incident[:8])
    text = wait_until_final(path)
    incident = parse(path, text)
    order = incident.meta["runs"]  # oldest first, by when each run started
    assert incident.meta["incident"] == alerts[0].incident and sorted(order) == sorted(ids)
    assert incident.meta["run_id"] == order[0] and incident.meta["outcome"] == "succeeded"
    target_of = {ids[0]: f"primary/{made['first'][1]}", ids[1]: f"primary/{made['second'][1]}"}
    assert incident.body.startswith(f"# Postmortem (draft): incident KafkaConsumerGroupStuck on "
                                    f"{target_of[order[0]]}, {target_of[order[1]]}, ")
    rows = table_rows(section(incident.body, "Runs"))
    assert [row[0].split()[0] for row in rows] == [f"`{run_id[:8]}`" for run_id in order]
    assert all(row[4] == "succeeded" and row[5] == "Completed" for row in rows)
    for run_id, row in zip(order, rows):
        assert f"[Slack thread]({threads[run_id]})" in row[6] and f"/runs/flow-run/{run_id})" in row[6]
    group_of = {ids[0]: made["first"][1], ids[1]: made["second"][1]}
    for index, run_id in enumerate(order, start=1):
        assert f"## Run {index}: `kafka-replay` on primary/{group_of[run_id]} (`{run_id[:8]}`), succeeded" in text
    assert text.count("## Root cause (TO WRITE)") == 1, "the team's sections appear once"
    assert text.count("### Summary") == 2 and text.count("### Impact") == 2
    timeline = table_rows(section(incident.body, "Timeline (UTC)"))
    assert {row[1] for row in timeline if row[2] == "journal"} == {f"`{run_id[:8]}`" for run_id in ids}
    fired = {row[1]: row[3] for row in timeline if row[2] == "alert" and "fired" in row[3]}
    assert fired == {f"`{run_id[:8]}`": f"alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup="
                                        f"{group_of[run_id]})" for run_id in ids}, "each alert fired once, for its run"
    assert not [row for row in timeline if row[2].startswith("Prefect")], "state changes are in the full record"
    # (in the order they completed, which need not be the order they started)
    assert sorted(row[1] for row in table_rows(section(incident.body, "Full record (UTC)"))
                  if row[3].startswith("state Completed")) == sorted(f"`{run_id[:8]}`" for run_id in order)
    assert incident.meta["targets"] == [f"primary/{group_of[run_id]}" for run_id in order]
    assert "when this draft was written" not in text
    excerpts = [part.split("```", 1)[0] for part in text.split("```text")[1:]]
    assert len(excerpts) == 2 and all("Beginning flow run" in excerpt for excerpt in excerpts)
    assert not any("Finished in state Completed(" in excerpt or "Running hook" in excerpt for excerpt in excerpts)

    # The run started by hand keeps its own draft, with its own thread.
    own = Path(journal.last(views[by_hand].entries, "postmortem").data["path"])
    assert own.stem.endswith(f"-kafka-replay-{by_hand[:8]}") and own != path
    own_text = wait_for_text(own, "**Prefect state:** Completed")
    assert f"[Slack thread]({threads[by_hand]})" in own_text and "incident" not in parse(own, own_text).meta
    assert sorted(p.path for p in list_postmortems(settings.postmortem_dir)) == sorted([path, own])


def wait_until_final(path: Path, timeout: float = 30.0) -> str:
    """The incident draft once every run in it is final (the last run's redraft after its final state)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text()
        if "not final yet" not in text and text.count("**Prefect state:** Completed") == 2:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{path} never had both runs final:\n{text}")
