"""rocketmq-reset-offset and a group with online consumers, on the stack's real broker: a consumer
registered by its heartbeats (HEART_BEAT over remoting, as every Java client registers; a gRPC
SimpleConsumer through the proxy is not listed as a connection of the group) makes a run refuse,
naming it, or with `wait_for_inactive` wait after approval until it stops, then reset."""
from __future__ import annotations

import pytest

from mq_runbooks.app import runs
from mq_runbooks.integrations.rocketmq import RocketMQAdmin
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.rocketmq_support import OnlineConsumer, consume, make_group, make_topic, produce, rocketmq_primary

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out

RUNBOOK = "rocketmq-reset-offset"


@pytest.fixture(scope="module")
def primary():
    return rocketmq_primary()


def consumer_offsets(cluster, group: str, topic: str) -> list[int]:
    with RocketMQAdmin.from_cluster(cluster) as admin:
        return [p.consumer_offset for p in admin.progress(group, topic)]


def a_consumed_group(cluster, unique) -> tuple[str, str]:
    topic, group = unique("orders"), unique("billing")
    make_topic(cluster, topic, 2)
    make_group(cluster, group)
    produce(cluster, topic, [f"m-{i}" for i in range(10)])
    consume(cluster, group, topic)
    return topic, group


def test_online_consumers_are_named_in_the_plan_and_the_run_refuses(primary, unique, runbook_env):
    topic, group = a_consumed_group(primary, unique)
    with OnlineConsumer(primary, group, topic) as consumer:
        shown = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true")
        assert shown.returncode == 0 and consumer.client_id in shown.stdout and "would overwrite" in shown.stdout
        settings, catalog = runbook_env(RUNBOOK)
        view = wait_until(start_runbook(settings, catalog, RUNBOOK, group=group, to_earliest="true"), finished,
                          timeout=120)
    assert not view.succeeded and consumer.client_id in view.message, view.message
    assert journal.last(view.entries, "approval") is None, "refused before the gate"
    assert consumer_offsets(primary, group, topic) == [5, 5], "nothing reset"


def test_with_wait_for_inactive_the_run_waits_for_the_consumers_to_stop_then_resets(primary, unique, runbook_env):
    topic, group = a_consumed_group(primary, unique)
    settings, catalog = runbook_env(RUNBOOK)
    with OnlineConsumer(primary, group, topic) as consumer:
        run_id = start_runbook(settings, catalog, RUNBOOK, group=group, to_earliest="true", wait_for_inactive="300")
        view = wait_until(run_id, paused, timeout=120)
        assert consumer.client_id in journal.last(view.entries, "plan").data["markdown"], "named at the gate"
        runs.answer_gate(settings, catalog, run_id, True, "ivan", "stopping them now")
        wait_until(run_id, lambda v: any("waiting up to" in e.summary for e in v.entries), timeout=60)
        assert not finished(runs.read_run(run_id)), "it waits"
        assert consumer_offsets(primary, group, topic) == [5, 5], "nothing reset while the consumer is online"
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert consumer_offsets(primary, group, topic) == [0, 0]
