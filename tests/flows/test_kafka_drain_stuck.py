"""kafka-drain-stuck end to end on the real primary Kafka: a real confluent_kafka consumer that stops
at a poison record (it never commits past it), real runs answered through the gate."""
from __future__ import annotations

import json
import shlex
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.app import runs, starts
from mq_runbooks.app.cli_runs import parse_parameters
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.base.settings import Settings
from mq_runbooks.flows.kafka_drain_plan import DrainPlan, DrainStuckParameters, StuckPartition, StuckRecord
from mq_runbooks.flows.kafka_drain_stuck import STEPS, copy_to_dead_letter, dry_run
from mq_runbooks.flows.kafka_offsets import alter
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit import journal
from mq_runbooks.kit.driver import Run
from tests.app.test_cli import runbook as runbook_cli
from tests.slack_fake import SlackFake
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, start_runbook, wait_until  # noqa: F401

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "kafka-drain-stuck"
SECRET = b"poison SECRET-4711 card=4111111111111111"
POISON_OFFSET = 2


@pytest.fixture
def slack():
    fake = SlackFake.start()
    yield fake
    fake.stop()


@pytest.fixture
def kafka_config(clusters):
    return clusters.kafka_cluster("primary").client_config()


class PoisonedConsumer(threading.Thread):
    """Consumes a topic in a group and commits each record after processing it, except a record whose
    value starts with b"poison": processing it fails forever (seek back, retry), so the consumer never
    commits past it, yet stays in the group."""

    def __init__(self, config, group, topic, client_id="orders-worker-1"):
        super().__init__(daemon=True)
        self.consumer = Consumer({**config, "group.id": group, "client.id": client_id, "enable.auto.commit": False,
                                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        self.topic = topic
        self.stopping = threading.Event()
        self.failures = 0

    def run(self):
        self.consumer.subscribe([self.topic])
        while not self.stopping.is_set():
            message = self.consumer.poll(0.1)
            if message is None or message.error():
                continue
            if message.value().startswith(b"poison"):
                self.failures += 1
                self.consumer.seek(TopicPartition(message.topic(), message.partition(), message.offset()))
                time.sleep(0.1)
                continue
            self.consumer.commit(message=message, asynchronous=False)
        self.consumer.close()  # leaves the group; commits nothing (no auto-commit)

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)


@pytest.fixture
def stuck_group(kafka_config, unique):
    """Topic with partition 0 = m0, m1, POISON, m3, m4 and partition 1 = n0, n1, n2; a consumer of the
    group that processed everything it could: stuck on partition 0 at offset 2, partition 1 drained."""
    topic, group = unique("orders"), unique("orders-app")
    with KafkaClient(kafka_config) as kafka:
        kafka.create_topic(topic, 2)
    producer = Producer(kafka_config)
    for i, value in enumerate([b"m0", b"m1", SECRET, b"m3", b"m4"]):
        headers = [("trace-id", b"trace-%d" % i)]
        producer.produce(topic, key=b"order-%d" % i, value=value, partition=0, headers=headers)
    for i in range(3):
        producer.produce(topic, key=b"n%d" % i, value=b"n%d" % i, partition=1)
    producer.flush()
    consumer = PoisonedConsumer(kafka_config, group, topic)
    consumer.start()
    deadline = time.monotonic() + 30
    while committed(kafka_config, group) != {(topic, 0): POISON_OFFSET, (topic, 1): 3} or consumer.failures < 3:
        assert time.monotonic() < deadline, "the consumer did not get stuck on the poison record"
        time.sleep(0.2)
    yield topic, group, consumer
    consumer.stop()


def committed(config, group):
    with KafkaClient(config) as kafka:
        return kafka.committed_offsets(group)


def read_partition(config, topic, partition, start=0):
    """Every record of topic:partition from `start` to its end."""
    consumer = Consumer({**config, "group.id": "test-reader", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, partition, start)])
    messages = []
    while True:
        message = consumer.poll(10)
        assert message is not None, f"no end of {topic}:{partition} within 10 s"
        if message.error():
            break
        messages.append(message)
    consumer.close()
    return messages


def journal_text(view):
    return json.dumps([entry.to_json() for entry in view.entries])


def test_stuck_partition_is_drained_to_the_dead_letter_topic_and_the_group_moves_on(
        kafka_config, stuck_group, runbook_env):
    topic, group, consumer = stuck_group
    settings, catalog = runbook_env(RUNBOOK)
    run_id = start_runbook(settings, catalog, RUNBOOK, group=group, stuck_after="2", wait_for_inactive="60")
    view = wait_until(run_id, paused)

    plan = journal.last(view.entries, "plan").data
    assert [(p["topic"], p["partition"], p["committed"], p["target"]) for p in plan["partitions"]] == [
        (topic, 0, POISON_OFFSET, POISON_OFFSET + 1)], "exactly the stuck partition; partition 1 has no lag"
    record = plan["partitions"][0]["record"]
    assert (record["offset"], record["key"], record["headers"]) == (2, "order-2", {"trace-id": "trace-2"})
    assert record["value_bytes"] == len(SECRET) and "redacted" in record["value"]
    assert plan["partitions"][0]["dead_letter_topic"] == f"{topic}.dlt"
    assert "must be stopped first" in plan["markdown"] and "orders-worker-1" in plan["markdown"]
    assert committed(kafka_config, group)[(topic, 0)] == POISON_OFFSET, "nothing changes before approval"

    runs.answer_gate(settings, catalog, run_id, True, "bob", "poison order, park it")
    wait_until(run_id, lambda v: any(e.data.get("waiting_for") == "inactive group" for e in v.entries))
    consumer.stop()  # the operator stops the consumers while the run waits
    view = wait_until(run_id, finished)

    assert view.succeeded, (view.message, view.entries[-3:])
    assert committed(kafka_config, group) == {(topic, 0): POISON_OFFSET + 1, (topic, 1): 3}
    copies = read_partition(kafka_config, f"{topic}.dlt", 0)
    assert len(copies) == 1, "in the dead-letter topic exactly once"
    assert (copies[0].key(), copies[0].value()) == (b"order-2", SECRET)
    assert dict(copies[0].headers()) == {
        "trace-id": b"trace-2", "dlt.original.topic": topic.encode(), "dlt.original.partition": b"0",
        "dlt.original.offset": b"2", "dlt.original.group": group.encode()}
    order = kinds(view)
    assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")
    assert "the plan changed after approval" not in journal_text(view), "the re-plan matched the approved digest"
    assert [e.data["step"] for e in view.entries if e.kind == "action"] == [
        f"dlt-copy:{topic}:0:{POISON_OFFSET}", "move-offsets"]
    assert SECRET.decode() not in journal_text(view), "the value never reaches the journal"
    # The plan contract's keys (its summary is the journal entry's own summary).
    assert {"digest", "columns", "rows", "changes_anything", "missing_targets"} <= set(plan)
    assert journal.last(view.entries, "plan").summary.startswith(f"1 of 2 observed partition(s) of {group} stuck")
    assert plan["columns"][:2] == ["topic", "partition"] and [row[:3] for row in plan["rows"]] == [
        [topic, 0, POISON_OFFSET]]

    # `runbook status RUN --plan` shows the whole plan (it crashed with KeyError 'current' before).
    status = runbook_cli("status", run_id, "--plan", env={"COLUMNS": "400"})  # 13 columns, none cut
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert "dead-letter topic" in status.stdout and f"{topic}.dlt:0" in status.stdout

    # The group's next consumer continues from the record after the poison one.
    resumed = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False,
                        "auto.offset.reset": "earliest"})
    resumed.subscribe([topic])
    deadline, seen = time.monotonic() + 30, []
    while time.monotonic() < deadline and len(seen) < 2:
        message = resumed.poll(0.5)
        if message is not None and not message.error():
            seen.append((message.partition(), message.offset(), message.value()))
    resumed.close()
    assert sorted(seen) == [(0, 3, b"m3"), (0, 4, b"m4")]

    # The snapshot's restore command, run as printed through kafka-replay, puts the offset back.
    command = journal.last(view.entries, "snapshot").data["restore_command"]
    words = shlex.split(command)
    assert words[:3] == ["runbook", "run", "kafka-replay"]
    restore_params = parse_parameters(tuple(words[i + 1] for i, word in enumerate(words) if word == "-p"))
    settings, catalog = runbook_env("kafka-replay")
    restore = start_runbook(settings, catalog, "kafka-replay", **restore_params)
    wait_until(restore, paused)
    runs.answer_gate(settings, catalog, restore, True, "bob", "put the poison record back")
    assert wait_until(restore, finished).succeeded
    assert committed(kafka_config, group) == {(topic, 0): POISON_OFFSET, (topic, 1): 3}


def test_report_mode_changes_nothing_and_shows_values_only_when_asked(kafka_config, stuck_group, runbook_env):
    topic, group, _ = stuck_group
    settings, catalog = runbook_env(RUNBOOK)
    redacted = start_runbook(settings, catalog, RUNBOOK, group=group, stuck_after="2", mode="report")
    shown = start_runbook(settings, catalog, RUNBOOK, group=group, stuck_after="2", mode="report",
                          show_values="true")
    redacted_view, shown_view = wait_until(redacted, finished), wait_until(shown, finished)

    for view in (redacted_view, shown_view):
        assert view.succeeded, view.message
        assert "approval_requested" not in kinds(view) and "action" not in kinds(view)
        assert [p["partition"] for p in journal.last(view.entries, "plan").data["partitions"]] == [0]
        assert journal.last(view.entries, "outcome").data["outcome"] == "unchanged"
    assert SECRET.decode() not in journal_text(redacted_view)
    assert journal.last(shown_view.entries, "plan").data["partitions"][0]["record"]["value"] == SECRET.decode()
    assert committed(kafka_config, group) == {(topic, 0): POISON_OFFSET, (topic, 1): 3}
    with KafkaClient(kafka_config) as kafka:
        assert f"{topic}.dlt" not in kafka.list_topics(), "report mode creates no dead-letter topic"


def test_unknown_group_is_refused_and_a_bad_topic_is_a_parameter_error(
        clusters, kafka_config, stuck_group, runbook_env, unique):
    topic, group, _ = stuck_group
    settings, catalog = runbook_env(RUNBOOK)
    runbook = catalog.get(RUNBOOK)

    def plan(**raw):
        return dry_run(runbook.validate_parameters({"cluster": "primary", "stuck_after": "1", **raw}), clusters)

    missing = unique("no-such-group")
    with pytest.raises(ParameterError) as error:
        plan(group=missing)  # a missing target: refused by the driver's rule, before a run exists
    assert error.value.problems[0][0] == "target" and error.value.problems[0][1].startswith(
        f"group {missing!r} on kafka cluster 'primary' (no committed offsets and no members")
    with pytest.raises(ParameterError) as error:
        plan(group=group, topic=[topic, unique("no-such-topic")])
    assert error.value.problems[0][0] == "topic" and "does not exist" in error.value.problems[0][1]
    with pytest.raises(ParameterError) as error:
        plan(group=group, dead_letter_topic=topic)
    assert error.value.problems == [
        ("dead_letter_topic", f"{topic!r} is a topic the group consumes; name another topic")]
    with pytest.raises(ParameterError, match="mode"):
        runbook.validate_parameters({"cluster": "primary", "group": group, "mode": "fix-it"})
    assert committed(kafka_config, group) == {(topic, 0): POISON_OFFSET, (topic, 1): 3}

    # A run started without the CLI's preflight (e.g. from an alert) refuses it too, at once: no sampling
    # for stuck_after seconds, no gate.
    run_id = start_runbook(settings, catalog, RUNBOOK, group=missing, stuck_after="600")
    view = wait_until(run_id, finished)
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "refused" and f"group {missing!r} on kafka cluster" in outcome.summary
    assert "approval_requested" not in kinds(view) and "action" not in kinds(view)


def test_failure_after_moving_restores_the_offset_and_a_rerun_does_not_copy_again(
        kafka_config, stuck_group, runbook_env, monkeypatch):
    topic, group, consumer = stuck_group
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="verify")
    run_id = start_runbook(settings, catalog, RUNBOOK, group=group, stuck_after="2", wait_for_inactive="30")
    wait_until(run_id, paused)
    consumer.stop()
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, finished)
    assert not view.succeeded
    assert journal.last(view.entries, "rollback").data["offsets_restored"] == 1
    assert committed(kafka_config, group)[(topic, 0)] == POISON_OFFSET, "the snapshot was restored"
    assert len(read_partition(kafka_config, f"{topic}.dlt", 0)) == 1

    monkeypatch.delenv("RUNBOOK_INJECT_FAULT")
    settings, catalog = runbook_env(RUNBOOK)
    again = PoisonedConsumer(kafka_config, group, topic)
    again.start()
    try:
        deadline = time.monotonic() + 30
        while again.failures < 3:
            assert time.monotonic() < deadline, "the restarted consumer did not get stuck again"
            time.sleep(0.2)
        rerun = start_runbook(settings, catalog, RUNBOOK, group=group, stuck_after="2", wait_for_inactive="30")
        wait_until(rerun, paused)
    finally:
        again.stop()
    runs.answer_gate(settings, catalog, rerun, True, "bob", "")
    view = wait_until(rerun, finished)
    assert view.succeeded, view.message
    copied = [e for e in view.entries if e.kind == "action" and "already_present" in e.data]
    assert [(e.data["already_present"], e.data["dead_letter_offset"]) for e in copied] == [(True, 0)]
    assert len(read_partition(kafka_config, f"{topic}.dlt", 0)) == 1, "no duplicate in the dead-letter topic"
    assert committed(kafka_config, group) == {(topic, 0): POISON_OFFSET + 1, (topic, 1): 3}


def test_failure_after_the_copy_before_the_offsets_moved_says_exactly_what_changed(
        kafka_config, stuck_group, runbook_env, slack):
    topic, group, consumer = stuck_group
    # Started from Slack: the gate gets the trigger, so the approval request goes where it was typed.
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="fail-before:move-offsets", RUNBOOK_SLACK_BOT_TOKEN=slack.token,
                                    RUNBOOK_SLACK_API_URL=slack.url, RUNBOOK_SLACK_CHANNEL="C0DEFAULT")
    params = catalog.get(RUNBOOK).validate_parameters({"cluster": "primary", "group": group, "stuck_after": "2",
                                                       "wait_for_inactive": "30"})
    run_id = starts.start_run(settings, catalog.get(RUNBOOK), params, requested_by="alice",
                            trigger={"source": "slack", "channel": "C0TYPED", "user": "alice"})
    wait_until(run_id, paused)
    requests = [c for c in slack.calls("chat.postMessage") if run_id in json.dumps(c.params)]
    assert requests and {c.params["channel"] for c in requests} == {"C0TYPED"}, [c.params for c in requests]
    assert "/runbook in Slack by alice" in json.dumps(requests[0].params)
    consumer.stop()
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, finished)

    assert not view.succeeded
    copied = f"{topic}:0@{POISON_OFFSET} copied in {topic}.dlt:0 at offset 0"
    assert [e.summary for e in view.entries if e.kind == "action"] == [copied], "copied; the offsets never moved"
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "failed" and outcome.data["changed"] == [copied]
    assert "failed before changing anything" not in outcome.summary
    assert copied in outcome.summary and "injected fault: step move-offsets failed before its change" in outcome.summary
    rollback = journal.last(view.entries, "rollback")
    assert rollback.summary.startswith("no committed offset had been moved: nothing to put back")
    assert rollback.data["offsets_restored"] == 0 and rollback.data["dead_letter_copies_kept"] == 1
    assert "stay there (a new run finds them and does not copy them again)" in rollback.summary
    assert committed(kafka_config, group) == {(topic, 0): POISON_OFFSET, (topic, 1): 3}
    assert len(read_partition(kafka_config, f"{topic}.dlt", 0)) == 1


def test_verify_reports_offsets_and_copies_not_as_planned_without_raising(clusters, kafka_config, unique):
    """A verify that measured no effect is ok=False (the driver then restores), never a success."""
    topic, group = unique("verify"), unique("verify-app")
    with KafkaClient(kafka_config) as kafka:
        kafka.create_topic(topic, 1)
    producer = Producer(kafka_config)
    for i in range(4):
        producer.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0)
    producer.flush()
    committer = Consumer({**kafka_config, "group.id": group, "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    committer.close()
    stuck = StuckPartition(topic, 0, 1, 4, ("worker",), StuckRecord(1, "k1", (), 2, 2, None, "v1"), f"{topic}.dlt", 0,
                           False)
    plan = DrainPlan("primary", group, "drain", "Empty", (), 1, 1, (), (stuck,))
    params = DrainStuckParameters(cluster="primary", group=group)
    run = Run(settings=Settings.from_environ(), clusters=clusters, id="not-a-run")

    nothing_done = STEPS.verify(run, params, plan, [])
    assert not nothing_done.ok
    assert f"{topic}:0 committed 1, planned 2" in nothing_done.summary
    assert f"{topic}:0@1 is in {topic}.dlt:0 0 time(s)" in nothing_done.summary

    copy = copy_to_dead_letter(clusters.kafka_cluster("primary"), group, stuck)
    with KafkaClient.from_cluster(clusters.kafka_cluster("primary")) as kafka:
        alter(kafka, group, {(topic, 0): 2})
    done = STEPS.verify(run, params, plan, [(stuck, copy)])
    assert done.ok, done.summary
    assert done.data == {"partitions_checked": 1, "copies_checked": 1}
