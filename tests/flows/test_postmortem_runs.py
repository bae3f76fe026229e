"""Golden postmortems from real kafka-replay runs on the real stack: one that succeeded (started by
an alert whose annotations carry secrets), one that was rejected, one that failed part-way and was
restored. Each draft must carry the run's own numbers, names and UTC times, in order.

The three runs are started together (one module fixture) and each test reads the draft of one."""
from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from uuid import UUID

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

from mq_runbooks.app import runs, starts
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.errors import UsageError
from mq_runbooks.kit.postmortem.context import duration, utc
from mq_runbooks.kit.postmortem.store import mark_reviewed, parse, read_postmortem
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit import journal
from mq_runbooks.kit.postmortem.publish import write_postmortem
from mq_runbooks.integrations.kafka import KafkaClient
from tests.flows.test_kafka_replay import PARTITIONS, PER_PARTITION, REPO, commit, finished, paused, wait_until

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


SECRETS = ("hunter2pass", "s3cr3tSASL", "xoxb-1111-2222-abcdefabcdef", "tok-9f8e7d6c5b4a")


def topic_and_groups_at_end(config, names) -> dict[str, tuple[str, str]]:
    """One topic of 3 partitions x 10 messages, and per name a group that consumed all of it and left."""
    topic = f"pm-{uuid.uuid4().hex[:8]}"
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, PARTITIONS)
    producer = Producer(config)
    for i in range(PARTITIONS * PER_PARTITION):
        producer.produce(topic, value=b"m%d" % i, partition=i % PARTITIONS)
    producer.flush()
    groups = {name: f"billing-{uuid.uuid4().hex[:8]}" for name in names}
    for group in groups.values():
        commit(config, group, {(topic, p): PER_PARTITION for p in range(PARTITIONS)})
    return {name: (topic, group) for name, group in groups.items()}


@pytest.fixture(scope="module")
def finished_runs(clusters, tmp_path_factory):
    """Three real runs, started together: succeeded (from an alert), rejected, failed and restored."""
    config = clusters.kafka_cluster("primary").client_config()
    directory = tmp_path_factory.mktemp("postmortem-runs")
    (directory / "runbooks").mkdir()
    text = (REPO / "mq_runbooks" / "runbooks" / "kafka-replay.yaml").read_text().replace("timeout: 30m", "timeout: 90s")
    (directory / "runbooks" / "kafka-replay.yaml").write_text(text)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RUNBOOK_CATALOG", str(directory / "runbooks"))
        env.setenv("RUNBOOK_SNAPSHOT_DIR", str(directory / "snapshots"))
        env.setenv("RUNBOOK_POSTMORTEM_DIR", str(directory / "postmortems"))
        env.delenv("RUNBOOK_INJECT_FAULT", raising=False)
        settings = Settings.from_environ()
        catalog = load_catalog(settings.catalog, settings.team_catalog)
        runbook = catalog.get("kafka-replay")
        made = topic_and_groups_at_end(config, ("succeeded", "rejected", "failed"))
        fired = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=3)

        def start(name, requested_by="alice", trigger=None, **raw):
            params = runbook.validate_parameters({"cluster": "primary", "group": made[name][1], **raw})
            return starts.start_run(settings, runbook, params, requested_by=requested_by, trigger=trigger)

        ids = {"succeeded": start("succeeded", "alert:KafkaConsumerGroupStuck",
                                  alert_trigger(made["succeeded"][1], fired), shift_by="-4"),
               "rejected": start("rejected", to_earliest="true")}
        ids["failed"] = start("failed", to_earliest="true")
        answers = {"succeeded": (True, "carol", "consumers are stopped"), "rejected": (False, "bob", "wrong group"),
                   "failed": (True, "bob", "go")}
        for name, run_id in ids.items():
            wait_until(run_id, paused, timeout=90)
            if name == "succeeded":
                with pytest.raises(UsageError, match="mallory is not an approver"):
                    runs.answer_gate(settings, catalog, run_id, True, "mallory", "let me")
            if name == "failed":  # the executor after the gate runs with the answerer's configuration
                env.setenv("RUNBOOK_INJECT_FAULT", "fail-during:alter-offsets")
            runs.answer_gate(settings, catalog, run_id, *answers[name])
            env.delenv("RUNBOOK_INJECT_FAULT", raising=False)
        yield {name: SimpleNamespace(run_id=run_id, view=wait_until(run_id, finished, timeout=90), settings=settings,
                                     topic=made[name][0], group=made[name][1], fired=fired)
               for name, run_id in ids.items()}


def alert_trigger(group: str, starts_at: dt.datetime) -> dict:
    return {
        "source": "alertmanager", "alertname": "KafkaConsumerGroupStuck", "status": "firing",
        "labels": {"alertname": "KafkaConsumerGroupStuck", "cluster": "primary", "consumergroup": group,
                   "severity": "page"},
        "annotations": {"summary": f"{group} is not consuming",
                        "runbook_url": "amqp://ops:hunter2pass@rabbit.internal:5672/",
                        "jaas": 'org.apache.kafka.common.security.scram.ScramLoginModule required password="s3cr3tSASL";',
                        "description": "slack xoxb-1111-2222-abcdefabcdef, api_token=tok-9f8e7d6c5b4a"},
        "startsAt": starts_at.isoformat(), "fingerprint": "c0ffee", "generatorURL": "", "receiver": "runbook",
    }


def wait_for_text(path: Path, text: str, timeout: float = 30.0) -> str:
    """The file's text once it holds `text` (the run drafts again after its final state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = path.read_text() if path.exists() else ""
        if text in found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{path} did not come to hold {text!r} within {timeout}s:\n{found}")


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {title!r} in:\n{text}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---")][1:]


def impact_of(text: str) -> dict[str, str]:
    return {row[0]: row[1] for row in table_rows(section(text, "Impact"))}


def timeline_of(text: str, title: str = "Timeline (UTC)") -> list[tuple[str, str, str]]:
    """The rows of the timeline (or of the full record: title "Full record (UTC)"), checked in time order."""
    rows = [tuple(row) for row in table_rows(section(text, title))]
    times = [row[0] for row in rows]
    assert times == sorted(times), "the timeline is in time order"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in times)
    return rows


def index_of(rows, source: str, starts: str) -> int:
    return next(i for i, row in enumerate(rows) if row[1] == source and row[2].startswith(starts))


def test_succeeded_replay_gives_a_draft_with_its_numbers_names_and_times(finished_runs):
    run = finished_runs["succeeded"]
    run_id, view, settings, group, fired = run.run_id, run.view, run.settings, run.group, run.fired
    assert view.succeeded, view.message

    # The flow drafted its own postmortem as it ended, and again once Prefect had set its final state.
    own = journal.last(view.entries, "postmortem")
    own_path = Path(own.data["path"])
    own_draft = parse(own_path, wait_for_text(own_path, "**Prefect state:** Completed"))
    assert own_draft.meta["outcome"] == "succeeded" and own_draft.meta["run_id"] == run_id
    assert "when this draft was written" not in own_draft.body and "Running" not in section(own_draft.body, "Summary")
    assert "| run duration |" in own_draft.body

    path = write_postmortem(run_id, settings)
    assert path == own_draft.path, "re-drafting refreshes the same file"
    text = path.read_text()
    postmortem = parse(path, text)
    assert (f"**Prefect state:** Completed (offsets of {group} reset: 12 message(s) to replay, 0 skipped), "
            "ended ") in text
    assert path.parent == settings.postmortem_dir
    assert path.name == f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}-kafka-replay-{run_id[:8]}.md"
    assert {k: postmortem.meta[k] for k in ("id", "runbook", "run_id", "status", "reviewers", "outcome")} == {
        "id": path.stem, "runbook": "kafka-replay", "run_id": run_id, "status": "draft", "reviewers": [],
        "outcome": "succeeded"}

    summary = section(text, "Summary")
    assert "alert `KafkaConsumerGroupStuck` (alertmanager, firing), started at " + utc(fired) in summary
    assert f"`consumergroup={group}`" in summary and "`shift_by` = `-4`" in summary
    assert "**succeeded**" in summary
    for secret in SECRETS:
        assert secret not in text, f"secret {secret} leaked into the draft"
    assert "amqp://ops:[REDACTED]@rabbit.internal" in text

    impact = impact_of(text)
    assert impact["messages replayed"] == "12" and impact["messages skipped"] == "0"
    assert impact["consumer lag before (at plan time)"] == f"0 message(s) over {PARTITIONS} partition(s)"
    assert impact["consumer lag after (log end at plan time)"] == "12 message(s), offsets read back as planned"
    assert impact["data at risk"] == "none recorded"
    verified = journal.last(view.entries, "verification").at
    assert impact["time from the alert's start to recovery"] == (
        f"{duration((verified - fired).total_seconds())} ({utc(fired)} to {utc(verified)}, verified)")

    rows = timeline_of(text)
    order = [index_of(rows, "alert", f"alert KafkaConsumerGroupStuck fired (cluster=primary, consumergroup={group})"),
             index_of(rows, "journal", "parameters:"), index_of(rows, "journal", "plan:"),
             index_of(rows, "journal", "approval_requested:"), index_of(rows, "journal", "approval: approved by carol"),
             index_of(rows, "journal", "snapshot:"), index_of(rows, "journal", "action:"),
             index_of(rows, "journal", "verification:"), index_of(rows, "journal", "outcome:")]
    assert order == sorted(order)
    assert rows[order[4]][0] == utc(journal.last(view.entries, "approval").at)
    assert not [row for row in rows if row[1].startswith("Prefect") or row[2].startswith(("lock:", "slack:"))]
    # Prefect's state changes and task runs are in the full record, in order with the journal.
    record = timeline_of(text, "Full record (UTC)")
    order = [index_of(record, "journal", "approval_requested:"), index_of(record, "Prefect flow run", "state Suspended"),
             index_of(record, "journal", "approval: approved by carol"), index_of(record, "journal", "outcome:"),
             index_of(record, "Prefect flow run", "state Completed")]
    assert order == sorted(order)
    assert any(row[1] == "Prefect task run" and row[2] == "alter-offsets Completed" for row in record)

    people = table_rows(section(text, "Decisions"))
    refused = journal.last(view.entries, "approval_refused")
    assert people == [
        [utc(refused.at), "mallory", "tried to approve; the gate refused",
         "mallory is not an approver (approvers: @kafka-oncall, alice, bob)"],
        [utc(journal.last(view.entries, "approval").at), "carol", "approved", "consumers are stopped"]]
    assert "started the run for alert:KafkaConsumerGroupStuck" in section(text, "Decisions")
    for title in ("Root cause (TO WRITE)", "What went well (TO WRITE)", "What went badly (TO WRITE)",
                  "Action items (TO WRITE)"):
        assert f"## {title}" in text
    appendix = section(text, "Appendix")
    plan_csv = journal.last(view.entries, "plan").data["csv"]
    snapshot = journal.last(view.entries, "snapshot").data
    assert f"```csv\n{plan_csv.strip()}\n```" in appendix and f"```csv\n{snapshot['csv'].strip()}\n```" in appendix
    assert f"Restore: `{snapshot['restore_command']}`" in appendix
    assert re.search(r"The last \d+ of \d+ log line\(s\)", appendix) and "Beginning flow run" in appendix
    excerpt = appendix.split("```text", 1)[1]
    assert "Finished in state Completed()" not in excerpt, "routine lines are left out of the excerpt"

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]), type=ArtifactFilterType(any_=["markdown"])))
    assert any(a.key == f"postmortem-{run_id[:8]}" and a.data == postmortem.body for a in artifacts)

    # Re-drafting refreshes a draft; once reviewed, the file is never rewritten.
    assert write_postmortem(run_id, settings) == path
    reviewed = mark_reviewed(settings.postmortem_dir, path.stem, "dave", "root cause filled in")
    assert write_postmortem(run_id, settings) == path
    assert path.read_text() == reviewed.text()
    assert read_postmortem(settings.postmortem_dir, path.stem).reviewers[0]["name"] == "dave"


def test_rejected_replay_gives_a_draft_saying_who_rejected_and_that_nothing_changed(finished_runs):
    run = finished_runs["rejected"]
    run_id, view, settings = run.run_id, run.view, run.settings
    assert view.state == "Rejected"

    from mq_runbooks.app.cli import cli
    import mq_runbooks.app.cli_postmortems  # noqa: F401

    result = CliRunner().invoke(cli, ["postmortems", "draft", run_id], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    path = next(settings.postmortem_dir.glob(f"*-kafka-replay-{run_id[:8]}.md"))
    assert str(path) in result.output
    text = path.read_text()
    assert parse(path, text).meta["outcome"] == "rejected"
    assert "**rejected**: rejected by bob; nothing was changed" in section(text, "Summary")
    assert "`to_earliest` = `true`" in section(text, "Summary")
    assert "started it:** `alice` started the run by hand" in text
    impact = impact_of(text)
    assert impact["messages replayed"] == f"0 (planned {PARTITIONS * PER_PARTITION}; nothing was changed)"
    assert impact["messages skipped"] == "0 (planned 0; nothing was changed)"
    assert impact["consumer lag after (log end at plan time)"] == "0 message(s): nothing was changed"
    assert impact["time from the run's start to recovery"] == "not recovered by this run (outcome: rejected)"
    people = table_rows(section(text, "Decisions"))
    rejection = journal.last(view.entries, "rejection")
    assert [r[1:] for r in people] == [["alice", "started the run", ""], ["bob", "rejected", "wrong group"]]
    assert people[1][0] == utc(rejection.at)
    rows = timeline_of(text)
    assert index_of(rows, "journal", "rejection: rejected by bob: wrong group") < index_of(rows, "journal", "outcome:")
    assert "No snapshot was taken" in section(text, "Appendix")


def test_failed_replay_gives_a_draft_with_what_was_restored(finished_runs):
    run = finished_runs["failed"]
    run_id, view, settings = run.run_id, run.view, run.settings
    assert not view.succeeded

    text = write_postmortem(run_id, settings).read_text()
    assert "outcome: failed" in text.split("\n---\n")[0]
    summary = section(text, "Summary")
    assert "**failed**: failed and rolled back: injected fault: step alter-offsets failed part-way" in summary
    impact = impact_of(text)
    assert impact["offsets restored from the snapshot"] == "3"
    assert impact["messages replayed"] == f"0 (planned {PARTITIONS * PER_PARTITION}; restored from the snapshot)"
    assert impact["consumer lag after (log end at plan time)"] == "0 message(s): restored from the snapshot"
    assert impact["time from the run's start to recovery"] == "not recovered by this run (outcome: failed)"
    assert [r[1:] for r in table_rows(section(text, "Decisions"))] == [
        ["alice", "started the run", ""], ["bob", "approved", "go"]]
    rows = timeline_of(text, "Full record (UTC)")
    steps = [index_of(rows, "journal", "approval: approved by bob"), index_of(rows, "journal", "snapshot:"),
             index_of(rows, "Prefect task run", "act Failed"),
             index_of(rows, "journal", "error: BrokerError: injected fault"),
             index_of(rows, "journal", "rollback: restored 3 offset(s) from the snapshot"),
             index_of(rows, "journal", "outcome: failed and rolled back")]
    assert steps == sorted(steps)
    assert "Restore: `runbook run kafka-replay -p cluster=primary" in section(text, "Appendix")
