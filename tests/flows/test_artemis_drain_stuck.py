"""artemis-drain-stuck end to end on the real Artemis primary: a real AMQP consumer that holds 100
deliveries and acknowledges nothing beside a healthy one, a real run answered through the gate, and
every message id counted: none lost."""
from __future__ import annotations

import threading
import time

import pytest

from mq_runbooks.app import runs
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.artemis_drain_stuck import dry_run
from mq_runbooks.integrations.artemis import ArtemisManagement
from mq_runbooks.integrations.artemis_amqp import AmqpSession
from mq_runbooks.kit import journal
from tests.artemis_support import ids_in, produce, remove_queues, wait_for
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, start_runbook, wait_until  # noqa: F401

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "artemis-drain-stuck"


@pytest.fixture
def primary(clusters):
    return clusters.artemis_cluster("primary")


class Healthy(threading.Thread):
    """Takes one message at a time and accepts it after `work_s` (slow until the test speeds it up)."""

    def __init__(self, cluster, queue, expected, selector=None):
        super().__init__(daemon=True)
        self.cluster, self.queue, self.expected, self.selector = cluster, queue, expected, selector
        self.work_s = 0.3
        self.ids: list[str] = []
        self.stop = threading.Event()

    def run(self):
        with AmqpSession.from_cluster(self.cluster, "healthy-consumer") as amqp:
            consumer = amqp.consumer(self.queue, selector=self.selector)
            while not self.stop.is_set() and len(self.ids) < self.expected:
                got = consumer.next(timeout_s=1.0)
                if got is not None:
                    self.ids.append(got.properties["msg_id"])
                    time.sleep(self.work_s)


def test_a_consumer_holding_100_deliveries_is_drained_and_nothing_is_lost(primary, unique, runbook_env):
    queue = unique("orders")
    ids = [f"m{i}" for i in range(300)]
    produce(primary, queue, ids)
    stuck = AmqpSession.from_cluster(primary, "stuck-consumer")
    healthy = Healthy(primary, queue, len(ids))
    try:
        stuck.subscribe(queue, credit=100)
        assert stuck.held(at_least=100, wait_s=20) == 100
        healthy.start()
        wait_for(lambda: healthy.ids, what="the healthy consumer at work")
        settings, catalog = runbook_env(RUNBOOK)
        run_id = start_runbook(settings, catalog, RUNBOOK, queue=queue, stuck_after_s="1", window_s="2",
                               verify_window_s="3")
        view = wait_until(run_id, paused, timeout=60)
        plan = journal.last(view.entries, "plan")
        rows = [dict(zip(plan.data["columns"], row)) for row in plan.data["rows"]]
        assert len(rows) == 1 and rows[0]["held"] == 100 and rows[0]["acknowledged"] == 0, rows
        assert rows[0]["client id"].startswith("stuck-consumer-") and rows[0]["protocol"] == "AMQP"
        assert rows[0]["remote address"].startswith("127.0.0.1:") and rows[0]["connection"]
        assert "1 healthy consumer(s)" in plan.summary
        with ArtemisManagement.from_cluster(primary) as artemis:
            assert artemis.queue(queue).consumer_count == 2, "nothing is closed before approval"

        runs.answer_gate(settings, catalog, run_id, True, "grace", "consumer hung since the deploy")
        wait_until(run_id, lambda v: "action" in kinds(v), timeout=60)
        healthy.work_s = 0.0
        view = wait_until(run_id, finished, timeout=60)
        assert view.succeeded, view.message
        healthy.join(60)
        assert sorted(healthy.ids) == sorted(ids), "every message reached the healthy consumer exactly once"
        verification = journal.last(view.entries, "verification").data
        assert verification["acknowledged_in_window"] > 0
        order = kinds(view)
        assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")
    finally:
        healthy.stop.set()
        stuck.close()
        remove_queues(primary, queue)


def drain(settings, catalog, queue, approver="grace", **extra):
    """One run of the runbook on `queue`, approved; its finished view and its plan's rows."""
    run_id = start_runbook(settings, catalog, RUNBOOK, queue=queue, stuck_after_s="1", window_s="2",
                           verify_window_s="3", **extra)
    view = wait_until(run_id, paused, timeout=60)
    plan = journal.last(view.entries, "plan")
    rows = [dict(zip(plan.data["columns"], row)) for row in plan.data["rows"]]
    runs.answer_gate(settings, catalog, run_id, True, approver, "stuck again")
    return wait_until(run_id, finished, timeout=90), rows


def test_messages_held_by_stuck_consumers_park_after_the_second_close_and_none_is_lost(primary, unique, runbook_env):
    queue = unique("orders")
    parking = unique("orders-parking")
    ids = [f"m{i}" for i in range(300)]  # enough that messages still wait at the second run
    produce(primary, queue, ids)
    poison = ["m0", "m1", "m2"]  # the stuck consumers take these first; the healthy one never takes them
    healthy = Healthy(primary, queue, len(ids) - 3, selector="msg_id NOT IN ('m0', 'm1', 'm2')")
    settings, catalog = runbook_env(RUNBOOK)
    extra = {"park_after": "2", "parking_queue": parking}
    stuck = AmqpSession.from_cluster(primary, "stuck-consumer")
    try:
        stuck.subscribe(queue, credit=3)
        assert stuck.held(at_least=3, wait_s=20) == 3
        healthy.start()
        wait_for(lambda: healthy.ids, what="the healthy consumer at work")

        # First close: held once, so they go back to the queue (its head), counted in the ledger.
        view, rows = drain(settings, catalog, queue, **extra)
        assert view.succeeded, view.message
        assert [(r["held"], r["to park"]) for r in rows] == [(3, 0)]
        assert sorted(ids_in(primary, queue, "msg_id IN ('m0', 'm1', 'm2')")) == poison
        stuck.close()

        # A new consumer takes the same three and hangs again: the second close parks them.
        stuck = AmqpSession.from_cluster(primary, "stuck-consumer")
        stuck.subscribe(queue, credit=3)
        assert stuck.held(at_least=3, wait_s=20) == 3
        view, rows = drain(settings, catalog, queue, approver="heidi", **extra)
        assert view.succeeded, view.message
        assert [(r["held"], r["to park"]) for r in rows] == [(3, 3)]
        action = [e for e in view.entries if e.kind == "action"][0]
        assert len(action.data["parked"]) == 3 and f"3 parked in {parking}" in action.summary
        assert journal.last(view.entries, "verification").data["parked"] == 3
        assert sorted(ids_in(primary, parking)) == poison
        with ArtemisManagement.from_cluster(primary) as artemis:
            assert not artemis.queue(queue).paused, "the queue is resumed"
        healthy.work_s = 0.0
        healthy.join(60)
        assert sorted(healthy.ids) == sorted(set(ids) - set(poison)), "the others reached the healthy consumer once"
        assert ids_in(primary, queue) == [], "nothing lost: every message is parked or consumed"
    finally:
        healthy.stop.set()
        stuck.close()
        remove_queues(primary, queue, parking)


def test_an_unknown_queue_is_refused_before_a_run_exists(clusters, unique, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    runbook = catalog.get(RUNBOOK)
    with pytest.raises(ParameterError, match="queue: 'gone-"):
        dry_run(runbook.validate_parameters({"cluster": "primary", "queue": unique("gone"), "window_s": "1"}),
                clusters, settings)
    with pytest.raises(ParameterError, match="window_s"):
        runbook.validate_parameters({"cluster": "primary", "queue": "q", "window_s": "-1"})
