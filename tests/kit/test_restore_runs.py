"""`runbook restore RUN` end to end on the stack: a restore is a run of its own (its plan a diff of
what it puts back against what is there now, the runbook's approvers, the same lock, the runbook's
own restore, a read-back, its journal and postmortem), linked both ways with the run it restores.

The conformance round trip for each shipped runbook that restores from its snapshot: snapshot ->
act -> runbook restore -> every value the snapshot saved is back; after a run that succeeded, and
with a value that moved since the run, which the restore's plan says."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from mq_runbooks.app import restores, runs
from mq_runbooks.base.errors import UsageError
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import (  # noqa: F401 (runbook_env is a fixture)
    finished, kinds, paused, runbook_env, start_runbook, wait_until,
)
from tests.flows.test_kafka_drain_stuck import stuck_group  # noqa: F401 (a fixture)
from tests.flows.test_kafka_replay import commit, committed, group_at_end, kafka_config  # noqa: F401 (fixtures)
from tests.flows.test_redis_streams_replay import GROUP, add_at, consume_all, group_info, idle_consumers
from tests.integrations.test_rabbitmq import eventually
from tests.integrations.test_redis_streams import raw, stream  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


class NewEntriesOnly(threading.Thread):
    """A consumer that keeps reading new entries (one added every 0.2 s) and acknowledging them, and
    never reads its own pending list: entries claimed to it stay pending there."""

    def __init__(self, raw, stream: str, name: str):
        super().__init__(daemon=True)
        self.raw, self.stream, self.name, self.stopping = raw, stream, name, threading.Event()

    def run(self):
        while not self.stopping.wait(0.2):
            self.raw.xadd(self.stream, {"n": "new"})
            for _, entries in self.raw.xreadgroup(GROUP, self.name, {self.stream: ">"}, count=10):
                self.raw.xack(self.stream, GROUP, *[entry_id for entry_id, _ in entries])

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(timeout=10)


def approved_run(settings, catalog, runbook_id: str, **params) -> runs.RunView:
    run_id = start_runbook(settings, catalog, runbook_id, **params)
    wait_until(run_id, paused, timeout=90)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "go")
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    return view


def restored(settings, catalog, original: str, approver: str = "bob") -> runs.RunView:
    """Start a restore of `original` as alice, check it waits for approval, approve it, its outcome."""
    restore_id = restores.start_restore(settings, restores.restore_request(catalog, original), "alice")
    waiting = wait_until(restore_id, paused, timeout=90)
    asked = journal.last(waiting.entries, "approval_requested")
    assert asked is not None and asked.data.get("approvers"), "a restore waits for the runbook's approvers"
    runs.answer_gate(settings, catalog, restore_id, True, approver, "put it back")
    return wait_until(restore_id, finished, timeout=120)


def test_redis_streams_replay_round_trip_after_success_and_a_group_moved_since(raw, stream, runbook_env):
    settings, catalog = runbook_env("redis-streams-replay")
    now = int(time.time() * 1000)
    ids = add_at(raw, stream, now - 60_000, 10)
    raw.xgroup_create(stream, GROUP, id="0")
    assert consume_all(raw, stream, "billing-1") == ids
    eventually(lambda: idle_consumers(raw, stream, 1000), "billing-1 to be idle 1 s (stopped)")
    view = approved_run(settings, catalog, "redis-streams-replay", stream=stream, group=GROUP, to_id=ids[3],
                        active_within_ms="1000")
    assert group_info(raw, stream)["last-delivered-id"].decode() == ids[3]
    raw.xgroup_setid(stream, GROUP, ids[5])  # someone moved the group after the run

    shown = runbook("restore", view.id, "--plan", "--json")
    assert shown.returncode == 0, shown.stderr
    preview = json.loads(shown.stdout)
    assert preview["restore_of"] == view.id and preview["changes_anything"]
    [row] = preview["rows"]
    assert (row["now"], row["restore to"], row["the run set"]) == (ids[5], ids[-1], ids[3])
    assert row["since the run"] == f"moved since the run: {ids[3]} -> {ids[5]}"
    assert any("acknowledged" in line for line in preview["cannot_undo"])
    assert group_info(raw, stream)["last-delivered-id"].decode() == ids[5], "--plan changes nothing"

    restore = restored(settings, catalog, view.id)
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert group_info(raw, stream)["last-delivered-id"].decode() == ids[-1], "the snapshot's position is back"
    start = journal.last(restore.entries, "parameters")
    assert start.data["trigger"]["restore_of"] == view.id and start.summary.startswith(f"restore of run {view.id}")
    plan = journal.last(restore.entries, "plan")
    assert plan.data["moved_since"] == [f"{stream} group {GROUP} last-delivered id"]
    assert "moved since the run" in plan.data["markdown"] and "cannot be undone" in plan.data["markdown"]
    order = kinds(restore)
    assert order.index("lock") < order.index("plan") < order.index("approval") < order.index("action") \
        < order.index("verification") < order.index("outcome")
    assert journal.last(restore.entries, "verification").data["not_restored"] == []
    assert restore.name.startswith("restore redis-streams-replay")
    # The run restored names its restore, and its postmortem is drafted again with it.
    notes = [e for e in journal.read(view.id) if e.kind == "note" and e.data.get("restored_by") == restore.id]
    assert [n.summary.split(" (")[0] for n in notes] == [f"restore requested by alice as run {restore.id}",
                                                         f"restored by run {restore.id}"]
    redrafted = journal.last(journal.read(view.id), "postmortem")
    assert redrafted.at > notes[-1].at
    assert f"restored by run {restore.id} (requested by alice)" in Path(redrafted.data["path"]).read_text()

    again = restores.start_restore(settings, restores.restore_request(catalog, view.id), "alice")
    unchanged = wait_until(again, finished, timeout=90)
    assert journal.last(unchanged.entries, "outcome").data["outcome"] == "unchanged"
    assert "approval_requested" not in kinds(unchanged), "nothing to put back asks nobody"
    with pytest.raises(UsageError, match="is a restore of run"):
        restores.restore_request(catalog, restore.id)


def test_kafka_replay_round_trip_puts_every_saved_offset_back(kafka_config, group_at_end, runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay")
    before = committed(kafka_config, group)
    view = approved_run(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    assert set(committed(kafka_config, group).values()) == {0}
    commit(kafka_config, group, {(topic, 0): 4})  # a consumer moved partition 0 after the run

    restore = restored(settings, catalog, view.id)
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert committed(kafka_config, group) == before, "everything the snapshot saved is back"
    plan = journal.last(restore.entries, "plan")
    assert plan.data["moved_since"] == [f"{topic}:0"] and len(plan.data["rows"]) == 3
    outcome = journal.last(restore.entries, "outcome")
    assert outcome.data["restore_of"] == view.id and "cannot be undone" in outcome.summary


def test_a_restore_is_refused_before_a_run_exists_when_there_is_nothing_to_restore(kafka_config, group_at_end,
                                                                                    runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", timeout="60s")
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused, timeout=90)
    with pytest.raises(UsageError, match="has not ended"):
        restores.restore_request(catalog, run_id)
    runs.answer_gate(settings, catalog, run_id, False, "bob", "not now")
    wait_until(run_id, finished, timeout=90)
    refused = runbook("restore", run_id, "--as", "alice", env={"RUNBOOK_APPROVAL_PROOF": "typed"})
    assert refused.returncode == 2 and "saved no snapshot" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    unknown = runbook("restore", "no-such-run-name", "--plan")
    assert unknown.returncode == 2 and "no run 'no-such-run-name'" in unknown.stderr, unknown.stderr


def test_runs_shows_the_target_and_the_outcome_of_a_failed_run_which_a_restore_finds_in_place(
        kafka_config, group_at_end, runbook_env, monkeypatch):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_INJECT_FAULT="fail-during:alter-offsets")
    run_id = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    wait_until(run_id, paused, timeout=90)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, finished, timeout=120)
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "failed" and "rolled back" in outcome.summary
    assert view.message != outcome.summary, "Prefect keeps the exception's text"

    listed = runbook("runs", "--runbook", "kafka-replay", "--limit", "50", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [item for item in json.loads(listed.stdout) if item["id"] == run_id]
    assert (row["target"], row["lock"]) == (f"primary/{group}", f"kafka:primary:group:{group}")
    assert row["message"] == outcome.summary, "the outcome's summary, not Prefect's exception text"

    # Rolled back already: a restore finds every saved offset in place, and says so without asking anyone.
    monkeypatch.delenv("RUNBOOK_INJECT_FAULT")
    shown = runbook("restore", run_id, "--plan")
    assert shown.returncode == 0, shown.stderr
    assert "restore 0 of 3 saved value(s)" in shown.stdout and "already as the snapshot saved them" in shown.stdout
    status = runbook("status", run_id)
    assert f"restore by hand: runbook run kafka-replay -p cluster=primary -p group={group} -p from_file=" in status.stdout
    assert f"runbook restore {run_id}" in status.stdout


def test_redis_streams_drain_stuck_round_trip_claims_back_what_is_still_pending(raw, stream, runbook_env):
    from tests.flows.test_redis_streams_drain_stuck import add, make_poison, pending_of, read_new

    settings, catalog = runbook_env("redis-streams-drain-stuck")
    ids = add(raw, stream, 20)
    raw.xgroup_create(stream, GROUP, id="0")
    assert read_new(raw, stream, "billing-dead", 20) == ids  # then it dies, holding all 20
    make_poison(raw, stream, "billing-dead", ids[3], 9)
    eventually(lambda: len(raw.xpending_range(stream, GROUP, "-", "+", 100, idle=1500)) == 20 or None,
               "20 entries idle 1.5 s")
    with NewEntriesOnly(raw, stream, "billing-healthy"):  # healthy: it reads, but never its pending list
        view = approved_run(settings, catalog, "redis-streams-drain-stuck", stream=stream, group=GROUP,
                            idle_ms="1500", poison_after="3", claim_to="billing-healthy")
    kept = [i for i in ids if i != ids[3]]
    assert pending_of(raw, stream) == {i: "billing-healthy" for i in kept}
    raw.xack(stream, GROUP, kept[0])  # billing-healthy processed one since the run

    restore = restored(settings, catalog, view.id)
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    # Everything declared restorable is back: the owner of each entry still pending. The poison entry and
    # the one processed since stay acknowledged, as the runbook declares.
    assert pending_of(raw, stream) == {i: "billing-dead" for i in kept[1:]}
    plan = journal.last(restore.entries, "plan")
    assert len(plan.data["rows"]) == 18 and plan.data["saved_values"] == 18
    assert {row[3] for row in plan.data["rows"]} == {"billing-healthy"}, "the run set: claimed to billing-healthy"
    assert any("stay acknowledged" in line for line in plan.data["cannot_undo"])


def test_rabbitmq_failover_round_trip_puts_the_switch_back_and_says_the_messages_stay(clusters, tmp_path, runbook_env,
                                                                                       monkeypatch):
    from tests.flows.test_rabbitmq_failover import (
        MAIN_PORTS, PRIMARY_ENDPOINT, STANDBY_ENDPOINT, clusters_yaml, declare_orders, file_switch, queue_depth,
    )
    from tests.rabbitmq_failover_support import amqp_url, api, publish_ids, scratch_vhost

    primary, standby = clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")
    endpoint_file = tmp_path / "endpoint.json"
    endpoint_file.write_text(json.dumps({"rabbitmq": {"endpoint": PRIMARY_ENDPOINT}}))
    monkeypatch.setenv("RUNBOOK_CLUSTERS", str(clusters_yaml(tmp_path, MAIN_PORTS, file_switch(endpoint_file))))
    settings, catalog = runbook_env("rabbitmq-failover")
    with scratch_vhost(primary, standby) as vhost, api(primary) as source:
        declare_orders(source, vhost)
        publish_ids(primary, vhost, "orders", 30)
        view = approved_run(settings, catalog, "rabbitmq-failover", cluster="primary", vhost=vhost,
                            switch="orders-clients")
        assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == STANDBY_ENDPOINT

        restore = restored(settings, catalog, view.id)
        assert restore.succeeded, (restore.message, restore.entries[-4:])
        assert json.loads(endpoint_file.read_text())["rabbitmq"]["endpoint"] == PRIMARY_ENDPOINT, "the switch is back"
        [row] = journal.last(restore.entries, "plan").data["rows"]
        assert row == ["switch orders-clients", STANDBY_ENDPOINT, PRIMARY_ENDPOINT, STANDBY_ENDPOINT,
                       "as the run left it"]
        assert "the messages moved stay on the destination" in journal.last(restore.entries, "outcome").summary
        assert queue_depth(amqp_url(standby), vhost, "orders") == 30, "what cannot be undone is left as it is"


def test_kafka_drain_stuck_round_trip_puts_the_offset_back_and_keeps_the_dead_letter_copy(
        kafka_config, stuck_group, runbook_env):
    from tests.flows.test_kafka_drain_stuck import POISON_OFFSET, read_partition

    topic, group, consumer = stuck_group
    settings, catalog = runbook_env("kafka-drain-stuck")
    run_id = start_runbook(settings, catalog, "kafka-drain-stuck", group=group, stuck_after="2",
                           wait_for_inactive="60")
    wait_until(run_id, paused, timeout=90)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "park it")
    wait_until(run_id, lambda v: any(e.data.get("waiting_for") == "inactive group" for e in v.entries))
    consumer.stop()
    assert wait_until(run_id, finished, timeout=120).succeeded
    assert committed(kafka_config, group)[(topic, 0)] == POISON_OFFSET + 1

    restore = restored(settings, catalog, run_id)
    assert restore.succeeded, (restore.message, restore.entries[-4:])
    assert committed(kafka_config, group) == {(topic, 0): POISON_OFFSET, (topic, 1): 3}, "the snapshot is back"
    assert len(read_partition(kafka_config, f"{topic}.dlt", 0)) == 1, "the dead-letter copy stays, as declared"
    assert journal.last(restore.entries, "plan").data["rows"] == [
        [f"{topic}:0", POISON_OFFSET + 1, POISON_OFFSET, POISON_OFFSET + 1, "as the run left it"]]
