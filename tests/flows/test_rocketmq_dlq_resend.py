"""rocketmq-dlq-resend end to end on the stack's real name server and broker: 1,000 dead letters made
by the broker itself (a consumer's send-back with no retries left), resent with a failure after half
of them and a rerun, and every one found in the group's retry topic exactly once."""
from __future__ import annotations

from collections import Counter

import pytest

from mq_runbooks.app import runs
from mq_runbooks.flows.rocketmq_dlq_resend import RESENT_OF, dry_run
from mq_runbooks.integrations.rocketmq import RocketMQAdmin, dlq_topic, retry_topic
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.rocketmq_support import dead_letter_all, make_group, make_topic, produce, rocketmq_primary

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out

RUNBOOK = "rocketmq-dlq-resend"


@pytest.fixture(scope="module")
def primary():
    return rocketmq_primary()


def resent_keys(cluster, group: str) -> Counter:
    """Keys of the copies in %RETRY%<group> that carry our RESENT_FROM_DLQ marker (with repeats)."""
    with RocketMQAdmin.from_cluster(cluster) as admin:
        found = Counter()
        for broker, queue_id in admin.queues(retry_topic(group)):
            end = admin.max_offset(retry_topic(group), broker, queue_id)
            for message in admin.read_queue(retry_topic(group), broker, queue_id, 0, end):
                if RESENT_OF in message.properties:
                    found[message.keys] += 1
                    assert message.properties["RETRY_TOPIC"] != "" and message.body.startswith(b"body of ")
    return found


def test_1000_dead_letters_are_resent_once_each_across_a_failure_and_a_rerun(primary, unique, runbook_env,
                                                                             monkeypatch):
    topic, group = unique("payments"), unique("settlement")
    make_topic(primary, topic, 4)
    make_group(primary, group, retry_max_times=0)
    keys = [f"pay-{i}" for i in range(1000)]
    produce(primary, topic, keys)
    assert sorted(dead_letter_all(primary, group, topic)) == sorted(keys)

    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="fail-after:resend-5")  # 5 of 10 batches of 100
    run_id = start_runbook(settings, catalog, RUNBOOK, group=group)
    view = wait_until(run_id, paused, timeout=120)
    plan = journal.last(view.entries, "plan")
    assert plan.summary.startswith("1000 dead letter(s)"), plan.summary
    [row] = [dict(zip(plan.data["columns"], r)) for r in plan.data["rows"]]
    assert row["original topic"] == topic and row["to resend"] == 1000
    runs.answer_gate(settings, catalog, run_id, True, "ivan", "the fix is deployed")
    failed = wait_until(run_id, finished, timeout=180)
    assert not failed.succeeded
    assert sum(resent_keys(primary, group).values()) == 500, "half of them, before the failure"

    monkeypatch.delenv("RUNBOOK_INJECT_FAULT")
    settings, catalog = runbook_env(RUNBOOK)  # the fault is gone: a rerun
    rerun = start_runbook(settings, catalog, RUNBOOK, group=group)
    view = wait_until(rerun, paused, timeout=120)
    assert journal.last(view.entries, "plan").summary.startswith("500 dead letter(s)")
    assert "500 resent before" in journal.last(view.entries, "plan").summary
    runs.answer_gate(settings, catalog, rerun, True, "judy", "the rest")
    view = wait_until(rerun, finished, timeout=180)
    assert view.succeeded, (view.message, view.entries[-4:])
    resent = resent_keys(primary, group)
    assert sorted(resent) == sorted(keys) and set(resent.values()) == {1}, "each exactly once"
    snapshot = journal.last(view.entries, "snapshot").data
    assert len(snapshot["ids"]) == 500 and snapshot["ledger"].endswith(f"primary-{group}.jsonl")
    assert "exactly once" in journal.last(view.entries, "verification").summary
    with RocketMQAdmin.from_cluster(primary) as admin:  # a resent message stays in the DLQ
        assert sum(admin.max_offset(dlq_topic(group), b, q) for b, q in admin.queues(dlq_topic(group))) == 1000

    again = dry_run(catalog.get(RUNBOOK).validate_parameters({"cluster": "primary", "group": group}),
                    load_primary_clusters(), settings)
    assert len(again.to_resend) == 0 and again.already_resent == 1000 and not again.changes_anything()


def test_filter_limit_and_bad_input(primary, unique):
    topic, group = unique("payments"), unique("settlement")
    make_topic(primary, topic, 2)
    make_group(primary, group, retry_max_times=0)
    produce(primary, topic, [f"a-{i}" for i in range(6)], tag="refund")
    produce(primary, topic, [f"b-{i}" for i in range(4)], tag="charge")
    dead_letter_all(primary, group, topic)
    listed = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", f"group={group}", "-p", "filter=refund",
                     "-p", "limit=4", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"to_resend": 4' in listed.stdout and '"in_dlq": 6' in listed.stdout
    by_key = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", f"group={group}", "-p", "filter=b-2", "--json")
    assert '"to_resend": 1' in by_key.stdout, by_key.stdout
    for args, message in {("-p", "limit=-1"): "limit", ("-p", "limit=0"): "limit"}.items():
        done = runbook("run", RUNBOOK, "-p", "cluster=primary", "-p", f"group={group}", *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    unknown = runbook("run", RUNBOOK, "-p", "cluster=primary", "-p", f"group={unique('nobody')}")
    assert unknown.returncode == 2 and "is not a consumer group" in unknown.stderr


def load_primary_clusters():
    from mq_runbooks.base.clusters import load_clusters
    from tests.rocketmq_support import REPO
    return load_clusters(REPO / "clusters.yaml")
