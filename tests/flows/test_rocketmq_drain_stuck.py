"""rocketmq-drain-stuck end to end on the stack's real name server and broker: a consumer of the group,
online (its heartbeats register it with the broker), that can never consume one message and retries it
in place, as an orderly consumer does, so its queue's offset sits at that message while later ones
wait. A run with a fault after the copy, a rerun, the group progressing, the message in %DLQ%<group>
exactly once, and `runbook restore` putting the offset back."""
from __future__ import annotations

import pytest

from mq_runbooks.app import restores, runs
from mq_runbooks.flows.rocketmq_drain_plan import DRAINED_FROM, REDACTED
from mq_runbooks.integrations.rocketmq import RocketMQAdmin, dlq_topic
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.rocketmq_support import OnlineConsumer, make_group, make_topic, produce, rocketmq_primary, wait_for

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out

RUNBOOK = "rocketmq-drain-stuck"
KEYS = [f"m-{i}" for i in range(20)]  # round robin on 2 queues: queue 0 holds m-0, m-2, m-4, ... at offsets 0..9
POISON, POISON_OFFSET = "m-4", 2


@pytest.fixture(scope="module")
def primary():
    return rocketmq_primary()


def dead_letters(cluster, group: str) -> list:
    with RocketMQAdmin.from_cluster(cluster) as admin:
        if not admin.topic_exists(dlq_topic(group)):
            return []
        return [m for b, q in admin.queues(dlq_topic(group))
                for m in admin.read_queue(dlq_topic(group), b, q, 0, admin.max_offset(dlq_topic(group), b, q))]


def offset_of(cluster, group: str, topic: str) -> int | None:
    with RocketMQAdmin.from_cluster(cluster) as admin:
        broker, queue_id = admin.queues(topic)[0]
        return admin.consumer_offset(group, topic, broker, queue_id)


@pytest.mark.timeout(600)  # three runs (the fault, the rerun, the restore), each sampling twice
def test_a_group_stuck_on_a_poison_message_is_unblocked_once_across_a_fault_and_a_rerun(primary, unique,
                                                                                       runbook_env, monkeypatch):
    topic, group = unique("orders"), unique("shipping")
    make_topic(primary, topic, 2)
    make_group(primary, group)
    produce(primary, topic, KEYS)
    with OnlineConsumer(primary, group, topic, poison=POISON) as consumer:
        wait_for(lambda: len(consumer.consumed) == 12 and consumer.failures >= 2, timeout=60,
                 what="the consumer stuck on the poison message, the other queue consumed")
        assert offset_of(primary, group, topic) == POISON_OFFSET

        settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="fail-after:dlq-copy:*")
        run_id = start_runbook(settings, catalog, RUNBOOK, group=group, sample_ms="2000")
        view = wait_until(run_id, paused, timeout=120)
        plan = journal.last(view.entries, "plan")
        [row] = [dict(zip(plan.data["columns"], r)) for r in plan.data["rows"]]
        assert (row["topic"], row["queue"], row["consume offset"], row["keys"]) == (topic, 0, POISON_OFFSET, POISON)
        assert row["waiting"] == 8 and row["body"] == REDACTED and row["new offset"] == POISON_OFFSET + 1
        assert row["dead-letter topic"] == dlq_topic(group) and row["copied before"] == "no"
        assert row["size"] == len(f"body of {POISON}") and row["reconsume times"] == 0
        runs.answer_gate(settings, catalog, run_id, True, "ivan", "skip it")
        failed = wait_until(run_id, finished, timeout=120)
        assert not failed.succeeded
        assert "no offset had been moved" in journal.last(failed.entries, "rollback").summary
        assert [m.keys for m in dead_letters(primary, group)] == [POISON], "copied once before the fault"
        assert offset_of(primary, group, topic) == POISON_OFFSET, "still stuck"

        monkeypatch.delenv("RUNBOOK_INJECT_FAULT")
        settings, catalog = runbook_env(RUNBOOK)
        rerun = start_runbook(settings, catalog, RUNBOOK, group=group, sample_ms="2000", show_values="true")
        view = wait_until(rerun, paused, timeout=120)
        [row] = [dict(zip(plan.data["columns"], r)) for r in journal.last(view.entries, "plan").data["rows"]]
        copy_id = dead_letters(primary, group)[0].offset_msg_id
        assert row["copied before"] == copy_id and row["body"] == f"body of {POISON}"
        runs.answer_gate(settings, catalog, rerun, True, "judy", "skip it")
        view = wait_until(rerun, finished, timeout=120)
        assert view.succeeded, (view.message, view.entries[-4:])
        wait_for(lambda: len(consumer.consumed) == 19, timeout=60, what="the group consuming past the poison")
        assert sorted(consumer.consumed) == sorted(k for k in KEYS if k != POISON)
        assert "exactly once" in journal.last(view.entries, "verification").summary
        [letter] = dead_letters(primary, group)
        assert (letter.keys, letter.body, letter.properties["RETRY_TOPIC"]) == (POISON, b"body of m-4", topic)
        assert letter.properties[DRAINED_FROM] == row["message id"]
        snapshot = journal.last(view.entries, "snapshot").data
        assert [m["message_id"] for m in snapshot["messages"]] == [row["message id"]]
        assert f"{topic},broker-a,0,{POISON_OFFSET}" in snapshot["csv"]
        order = kinds(view)
        assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")

        # `runbook restore` puts the offset back (the consumer meets the poison message again); the copy stays.
        restore_id = restores.start_restore(settings, restores.restore_request(catalog, rerun), "alice")
        waiting = wait_until(restore_id, paused, timeout=90)
        [item] = [dict(zip(p.data["columns"], r)) for p in [journal.last(waiting.entries, "plan")]
                  for r in p.data["rows"]]
        assert item["restore to"] == POISON_OFFSET and item["now"] == 10, item
        runs.answer_gate(settings, catalog, restore_id, True, "ivan", "replay it")
        restored = wait_until(restore_id, finished, timeout=120)
        assert restored.succeeded, (restored.message, restored.entries[-4:])
        assert offset_of(primary, group, topic) == POISON_OFFSET
        assert len(dead_letters(primary, group)) == 1


def test_nothing_is_stuck_without_online_consumers_and_bad_input_exits_2(primary, unique):
    topic, group = unique("orders"), unique("shipping")
    make_topic(primary, topic, 2)
    make_group(primary, group)
    produce(primary, topic, KEYS[:4])
    with RocketMQAdmin.from_cluster(primary) as admin:
        for broker, queue_id in admin.queues(topic):
            admin.update_offset(group, topic, broker, queue_id, 0)
    plan = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", f"group={group}", "-p", "sample_ms=200", "--json")
    assert plan.returncode == 0, plan.stderr
    assert '"stuck": []' in plan.stdout and '"online": []' in plan.stdout
    cases = {
        ("-p", f"group={unique('nobody')}"): "is not a consumer group",
        ("-p", f"group={group}", "-p", f"topic={unique('nothing')}"): "is not a topic",
        ("-p", f"group={group}", "-p", "limit=-1"): "limit",
        ("-p", f"group={group}", "-p", "sample_ms=-5"): "sample_ms",
    }
    for args, message in cases.items():
        done = runbook("run", RUNBOOK, "-p", "cluster=primary", *args)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    unknown = runbook("run", RUNBOOK, "-p", "cluster=elsewhere", "-p", f"group={group}")
    assert unknown.returncode == 2 and "no rocketmq cluster named 'elsewhere'" in unknown.stderr
