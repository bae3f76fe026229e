"""kafka-replay end to end on the real stack: runs are real Prefect flow runs executed by the
engine's executor, answered through the same gate the CLI uses, acting on the real primary Kafka."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.states import Scheduled

from mq_runbooks.app import runs, workers
from mq_runbooks.base.errors import UsageError
from mq_runbooks.flows.replay_spec import parse_datetime
from mq_runbooks.kit import journal
from mq_runbooks.integrations.kafka import KafkaClient
from tests.flows.runbook_harness import (  # noqa: F401 (runbook_env is a fixture)
    finished, kinds, paused, runbook_env, start_runbook, wait_until,
)
from tests.flows.steady_traffic import WINDOW_MS, kafka_history, kafka_writer, now_ms
from tests.integrations.test_rabbitmq import eventually

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3
PER_PARTITION = 10


@pytest.fixture
def kafka_config(clusters):
    return clusters.kafka_cluster("primary").client_config()


@pytest.fixture
def group_at_end(kafka_config, unique):
    """A topic of 3 partitions x 10 messages and a group that consumed all of it and left."""
    topic, group = unique("replay"), unique("billing")
    with KafkaClient(kafka_config) as kafka:
        kafka.create_topic(topic, PARTITIONS)
    producer = Producer(kafka_config)
    for i in range(PARTITIONS * PER_PARTITION):
        producer.produce(topic, value=b"m%d" % i, partition=i % PARTITIONS)
    producer.flush()
    commit(kafka_config, group, {(topic, p): PER_PARTITION for p in range(PARTITIONS)})
    return topic, group


def commit(config, group, offsets):
    """Commit offsets as a consumer of the group would, then leave the group."""
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    consumer.close()


def committed(config, group):
    with KafkaClient(config) as kafka:
        return kafka.committed_offsets(group)


@pytest.fixture
def engine_env(runbook_env):
    """configure(timeout="60s", **env) -> (settings, catalog): kafka-replay alone, its gate timeout set."""
    return lambda timeout="60s", **env: runbook_env("kafka-replay", timeout=timeout, **env)


def start(settings, catalog, requested_by="alice", **raw):
    return start_runbook(settings, catalog, "kafka-replay", requested_by=requested_by, **raw)


def test_approved_replay_moves_offsets_as_planned_and_keeps_a_snapshot(kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env()
    run_id = start(settings, catalog, group=group, shift_by="-4")
    view = wait_until(run_id, paused)
    plan = journal.last(view.entries, "plan").data
    assert {(p["partition"], p["current"], p["target"]) for p in plan["partitions"]} == {
        (p, PER_PARTITION, PER_PARTITION - 4) for p in range(PARTITIONS)}
    assert plan["messages_replayed"] == 12
    assert committed(kafka_config, group) == {(topic, p): PER_PARTITION for p in range(PARTITIONS)}, \
        "nothing changes before approval"

    with pytest.raises(UsageError, match="alice started this run and may not approve it"):
        runs.answer_gate(settings, catalog, run_id, True, "alice", "")
    with pytest.raises(UsageError, match="mallory is not an approver"):
        runs.answer_gate(settings, catalog, run_id, True, "mallory", "")
    runs.answer_gate(settings, catalog, run_id, True, "carol", "consumers are stopped")  # carol is in @kafka-oncall
    view = wait_until(run_id, finished)

    assert view.succeeded, view.message
    assert committed(kafka_config, group) == {(topic, p): PER_PARTITION - 4 for p in range(PARTITIONS)}
    snapshot = journal.last(view.entries, "snapshot").data
    assert Path(snapshot["path"]).read_text() == snapshot["csv"]
    assert sorted(snapshot["csv"].splitlines()) == sorted(f"{topic},{p},{PER_PARTITION}" for p in range(PARTITIONS))
    refused = [e.data["by"] for e in view.entries if e.kind == "approval_refused"]
    assert refused == ["alice", "mallory"]
    approval = journal.last(view.entries, "approval")
    assert approval.data["by"] == "carol" and approval.data["comment"] == "consumers are stopped"
    order = kinds(view)
    assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")


def test_rejected_run_changes_nothing(kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env()
    run_id = start(settings, catalog, group=group, to_earliest="true")
    wait_until(run_id, paused)
    with pytest.raises(UsageError, match="a rejection needs a reason"):
        runs.answer_gate(settings, catalog, run_id, False, "bob", "")
    runs.answer_gate(settings, catalog, run_id, False, "bob", "wrong group")
    view = wait_until(run_id, finished)
    # Not green in Prefect's UI: of type Cancelled, named Rejected, and no success.
    assert (view.state, view.state_type) == ("Rejected", "CANCELLED") and not view.succeeded
    assert "snapshot" not in kinds(view) and "action" not in kinds(view)
    assert committed(kafka_config, group) == {(topic, p): PER_PARTITION for p in range(PARTITIONS)}
    # An expected outcome: one INFO line in the executor's log, no error, no traceback.
    assert_declined_quietly(runs.run_log_path(settings, run_id), f"run {run_id} rejected by bob: wrong group")
    # `runs --state` keeps it where people look: rejected and failed, neither completed nor cancelled.
    listed = {state: [v.id for v in runs.list_runs(limit=50, states=(state,))] for state in
              ("rejected", "failed", "completed", "cancelled")}
    assert run_id in listed["rejected"] and run_id in listed["failed"]
    assert run_id not in listed["completed"] and run_id not in listed["cancelled"]

    # Retry, as the Prefect UI's button proposes it: executed again, the run does nothing and ends as before.
    with get_client(sync_client=True) as client:
        retried = client.set_flow_run_state(run_id, Scheduled(name="AwaitingRetry", message="Retry from the UI"))
    if retried.status == SetStateStatus.ACCEPT:
        workers.spawn_executor(settings, run_id)
        wait_until(run_id, lambda v: v.state_type not in ("SCHEDULED", "PENDING", "RUNNING"), timeout=60)
    again = runs.read_run(run_id)
    assert (again.state, again.state_type, again.message) == ("Rejected", "CANCELLED", view.message), again
    assert [e.kind for e in again.entries].count("outcome") == 1
    assert committed(kafka_config, group) == {(topic, p): PER_PARTITION for p in range(PARTITIONS)}


def assert_declined_quietly(log_path: Path, line: str) -> None:
    """The run's log names the declined gate in exactly one INFO line and holds no error or traceback."""
    wait_for_line = time.monotonic() + 10  # the executor's last lines land a moment after the state
    while "Finished in state" not in log_path.read_text() and time.monotonic() < wait_for_line:
        time.sleep(0.2)
    text = log_path.read_text()
    assert "Traceback" not in text and "| ERROR" not in text, text
    naming = [row for row in text.splitlines() if line in row]
    assert len(naming) == 1 and "| INFO" in naming[0], text


def test_gate_timeout_rejects_and_changes_nothing(kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env(timeout="3s")
    run_id = start(settings, catalog, group=group, to_earliest="true")
    view = wait_until(run_id, finished, timeout=40)
    # The run waited suspended, with no process: the Prefect server failed it at the deadline, and
    # whoever looked next (here read_run; serve's sweep) concluded it as an expected outcome, not an
    # error (kit/endings.py): Failed by type, named TimedOut, no success, no traceback.
    assert not view.succeeded, (view.state, view.message)
    # Red in Prefect's UI (nobody answered: someone should look), never green.
    assert (view.state, view.state_type) == ("TimedOut", "FAILED"), (view.state, view.message)
    assert "nobody approved within 3s" in view.message
    log = runs.run_log_path(settings, run_id).read_text()
    assert "Traceback" not in log and "| ERROR" not in log, log
    assert journal.last(view.entries, "rejection").data["by"] == "timeout"
    assert "timed out; nothing was changed" in journal.last(view.entries, "outcome").summary
    assert committed(kafka_config, group) == {(topic, p): PER_PARTITION for p in range(PARTITIONS)}


def test_active_group_is_refused_listing_its_members(kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env()
    consumer = Consumer({**kafka_config, "group.id": group, "client.id": "billing-worker-7",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not consumer.assignment():
            consumer.poll(0.2)
        run_id = start(settings, catalog, group=group, to_earliest="true")
        view = wait_until(run_id, finished)
    finally:
        consumer.close()
    assert not view.succeeded
    error = journal.last(view.entries, "error").summary
    assert "can only be reset when it is inactive" in error and "Stable" in error
    assert "billing-worker-7" in error and topic in error
    assert "approval_requested" not in kinds(view)


def test_failure_part_way_restores_the_snapshot(kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env(RUNBOOK_INJECT_FAULT="fail-during:alter-offsets")
    run_id = start(settings, catalog, group=group, to_earliest="true")
    wait_until(run_id, paused)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, finished)
    assert not view.succeeded
    rollback = journal.last(view.entries, "rollback")
    assert rollback.data["restored"] is True and rollback.data["offsets_restored"] == 3
    assert "restored 3 offset(s)" in rollback.summary
    assert "injected fault: step alter-offsets failed part-way" in journal.last(view.entries, "error").summary
    changed = journal.last(view.entries, "outcome").data["changed"]
    assert changed and changed[0].startswith("alter-offsets failed part-way and may have applied part of its change")
    assert committed(kafka_config, group) == {(topic, p): PER_PARTITION for p in range(PARTITIONS)}


def test_plan_changed_after_approval_is_not_applied(kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env()
    run_id = start(settings, catalog, group=group, shift_by="-2")
    wait_until(run_id, paused)
    moved = {(topic, 0): 3, (topic, 1): PER_PARTITION, (topic, 2): PER_PARTITION}
    commit(kafka_config, group, moved)  # someone moved partition 0 while the gate waited
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, lambda v: paused(v) and any(e.kind == "note" for e in v.entries))
    assert "the plan changed after approval" in journal.last(view.entries, "note").summary
    new_plan = journal.last(view.entries, "plan").data
    assert {(p["partition"], p["target"]) for p in new_plan["partitions"]} == {(0, 1), (1, 8), (2, 8)}
    assert committed(kafka_config, group) == moved, "the approved plan was not applied"
    runs.answer_gate(settings, catalog, run_id, False, "bob", "stop here")
    assert not wait_until(run_id, finished).succeeded
    assert committed(kafka_config, group) == moved


def test_two_runs_on_one_group_never_overlap(kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env(RUNBOOK_LOCK_WAIT_S="2")
    first = start(settings, catalog, group=group, to_earliest="true")
    wait_until(first, paused)
    second = start(settings, catalog, group=group, to_latest="true")
    view = wait_until(second, finished)
    assert not view.succeeded
    error = journal.last(view.entries, "error").summary
    assert "another run holds the lock" in error and first in error
    assert "approval_requested" not in kinds(view)
    runs.answer_gate(settings, catalog, first, False, "alice", "test done")  # the requester may withdraw
    assert wait_until(first, finished).state == "Rejected"


# -- relative targets are fixed at the first plan; the digest binds the intent ----------------------

@pytest.fixture
def steady_topic(kafka_config, unique):
    """A topic of 2 partitions holding the last hour (one record every 6 s) and a group committed at its end."""
    topic, group = unique("steady"), unique("billing")
    with KafkaClient(kafka_config) as kafka:
        kafka.create_topic(topic, 2)
    stamps = kafka_history(kafka_config, topic, 2)
    commit(kafka_config, group, {(topic, p): len(stamps) for p in range(2)})
    return topic, group


def for_time(config, scope, timestamp_ms):
    with KafkaClient(config) as kafka:
        return kafka.offsets_for_timestamp(scope, timestamp_ms)


def planned_at(view) -> str:
    """The moment the run's relative targets are measured from, as its journal says."""
    [note] = [e for e in view.entries if e.kind == "note" and "relative_targets" in e.data]
    assert note.summary.startswith("relative targets fixed at the first plan: by_duration=PT15M measured from ")
    return note.data["planned_at"]


def test_by_duration_is_fixed_at_the_first_plan_so_one_approval_acts_while_records_arrive(
        kafka_config, steady_topic, engine_env):
    topic, group = steady_topic
    scope = [(topic, 0), (topic, 1)]
    settings, catalog = engine_env()
    with kafka_writer(kafka_config, topic, 2):
        run_id = start(settings, catalog, group=group, by_duration="PT15M")
        view = wait_until(run_id, paused, timeout=90)
        first_plan_ms = parse_datetime(planned_at(view))
        plan = journal.last(view.entries, "plan").data
        planned = {(p["topic"], p["partition"]): p["target"] for p in plan["partitions"]}
        assert planned == for_time(kafka_config, scope, first_plan_ms - WINDOW_MS), "planned from the pinned moment"
        assert plan["spec"].startswith("by_duration=PT15M (records since ")

        def window_moved():  # the window of the clock now starts past at least one more record
            later = for_time(kafka_config, scope, now_ms() - WINDOW_MS)
            return later if all(later[k] > planned[k] for k in scope) else None

        slid = eventually(window_moved, "the 15-minute window to move", 60)
        with KafkaClient(kafka_config) as kafka:
            eventually(lambda: kafka.log_offsets(scope)[(topic, 0)].log_end_offset
                       > plan["partitions"][0]["log_end"] or None, "new records", 30)
        runs.answer_gate(settings, catalog, run_id, True, "bob", "replay the last 15 minutes")
        view = wait_until(run_id, finished, timeout=90)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert committed(kafka_config, group) == planned, "acted once, with the pinned target"
    assert committed(kafka_config, group) != slid, "not the target of the later clock"
    assert [e.data["gate"] for e in view.entries if e.kind == "approval_requested"] == [1], "asked once"
    assert "approval_refused" not in kinds(view)
    assert [e.kind for e in view.entries].count("plan") == 1
    [drift] = [e for e in view.entries if e.kind == "note" and "drift" in e.data]
    assert "the approved plan still holds" in drift.summary and "log end" in drift.summary
    assert any(line.startswith(f"{topic}:0 log end ") for line in drift.data["drift"])


def test_a_changed_intent_is_asked_again_showing_the_difference_and_one_answer_acts(
        kafka_config, group_at_end, engine_env):
    topic, group = group_at_end
    settings, catalog = engine_env()
    run_id = start(settings, catalog, group=group, shift_by="-2")
    wait_until(run_id, paused)
    moved = {(topic, 0): 3, (topic, 1): PER_PARTITION, (topic, 2): PER_PARTITION}
    commit(kafka_config, group, moved)  # someone moved partition 0 while the gate waited: its target moves too
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, lambda v: paused(v) and journal.last(v.entries, "approval_requested").data["gate"] == 2)
    note = next(e for e in view.entries if e.kind == "note" and "changed" in e.data)
    assert "the plan changed after approval" in note.summary and f"{topic}:0 target 8 -> 1" in note.summary
    assert note.data["changed"] == [f"{topic}:0 target 8 -> 1"]
    assert f"{topic}:0 current 10 -> 3" in note.data["drift"]
    asked = journal.last(view.entries, "plan")
    assert asked.data["changed_since_approval"] == [f"{topic}:0 target 8 -> 1"]
    assert asked.data["markdown"].startswith("**Changed since the approved plan** (old -> new):")
    assert f"- {topic}:0 target 8 -> 1" in asked.data["markdown"]
    assert journal.last(view.entries, "approval_requested").data["plan_digest"] == asked.data["digest"]
    assert committed(kafka_config, group) == moved, "nothing applied before the new version is approved"

    runs.answer_gate(settings, catalog, run_id, True, "bob", "the new targets are right")  # one answer
    view = wait_until(run_id, finished)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert "approval_refused" not in kinds(view)
    assert committed(kafka_config, group) == {(topic, 0): 1, (topic, 1): 8, (topic, 2): 8}
