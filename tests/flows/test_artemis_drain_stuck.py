"""artemis-drain-stuck end to end on the real Artemis primary: a real AMQP consumer that holds 100
deliveries and acknowledges nothing beside a healthy one, a real run answered through the gate, and
every message id counted: none lost."""
from __future__ import annotations

import contextlib
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
from tests.flows.runbook_harness import (  # noqa: F401
    asked_again, at_second_gate, finished, kinds, paused, runbook_env, start_runbook, wait_until,
)
from tests.flows.steady_traffic import writer

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
    healthy = Healthy(primary, queue, len(ids))
    stuck = contextlib.ExitStack()  # closed in the end
    try:
        stuck.enter_context(hung_consumer(primary, queue, "stuck-consumer", 100))  # alive however long the gate waits
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


# -- traffic while the gate waits: the digest binds the connections to close, not the counts ----------

@contextlib.contextmanager
def hung_consumer(cluster, queue, name, holds):
    """A consumer that holds `holds` deliveries and acknowledges none, whose connection stays alive as
    a hung application's client library keeps it (a BlockingConnection left alone stops answering the
    broker, which drops it after its TTL: the gate may wait longer than that)."""
    session = AmqpSession.from_cluster(cluster, name)
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.is_set():
            try:
                session.held(at_least=holds + 1, wait_s=1.0)  # services the connection, takes nothing more
            except Exception:  # noqa: BLE001  (the run closed it: nothing left to keep alive)
                return

    pump = threading.Thread(target=keep_alive, name=f"{name}-alive", daemon=True)
    try:
        session.subscribe(queue, credit=holds)
        assert session.held(at_least=holds, wait_s=20) == holds
        pump.start()
        yield session
    finally:
        stop.set()
        if pump.is_alive():
            pump.join(10)
        session.close()


@pytest.fixture
def live_queue(primary, unique):
    """(queue, ids sent so far, the healthy consumer, [messages sent], stop the traffic): 100 messages
    and then 5 more every 0.5 s until stopped, one consumer holding 50 of them and acknowledging nothing, a
    healthy one taking the rest slowly."""
    queue = unique("orders")
    sent = [f"m{i}" for i in range(100)]
    produce(primary, queue, sent)
    healthy = Healthy(primary, queue, expected=10**9)

    def five_more() -> None:
        batch = [f"live-{len(sent) + i}" for i in range(5)]
        produce(primary, queue, batch)
        sent.extend(batch)

    traffic = contextlib.ExitStack()
    try:
        with hung_consumer(primary, queue, "stuck-consumer", 50):
            healthy.start()
            wait_for(lambda: healthy.ids, what="the healthy consumer at work")
            written = traffic.enter_context(writer(five_more, every_s=0.5, limit_s=300))
            yield queue, sent, healthy, written, traffic.close
    finally:
        traffic.close()
        healthy.stop.set()
        remove_queues(primary, queue)


def consumed_once(healthy, sent, stop_traffic) -> None:
    """Once the traffic stops, every message sent reaches the healthy consumer exactly once (the held
    ones after their consumer's close)."""
    stop_traffic()
    healthy.expected, healthy.work_s = len(sent), 0.0
    healthy.join(120)
    assert sorted(healthy.ids) == sorted(sent), "every message reached the healthy consumer exactly once"


def waiting_drain(runbook_env, queue):
    """A run on `queue` (its gate waits up to 10 minutes), once it waits: settings, catalog, run id, view."""
    settings, catalog = runbook_env(RUNBOOK, timeout="600s")
    run_id = start_runbook(settings, catalog, RUNBOOK, queue=queue, stuck_after_s="1", window_s="2", verify_window_s="3")
    return settings, catalog, run_id, wait_until(run_id, paused, timeout=90)


def test_messages_arriving_while_the_gate_waits_are_drift_and_one_approval_closes_the_stuck_consumer(
        primary, live_queue, runbook_env):
    queue, sent, healthy, written, stop_traffic = live_queue
    settings, catalog, run_id, view = waiting_drain(runbook_env, queue)
    [row] = [dict(zip(journal.last(view.entries, "plan").data["columns"], r))
             for r in journal.last(view.entries, "plan").data["rows"]]
    assert row["held"] == 50 and row["acknowledged"] == 0, row
    arrived = written[0]
    wait_for(lambda: written[0] >= arrived + 10, timeout=60, what="new messages while the gate waits")
    runs.answer_gate(settings, catalog, run_id, True, "grace", "consumer hung since the deploy")
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert [e.data["gate"] for e in view.entries if e.kind == "approval_requested"] == [1], "asked once"
    assert "approval_refused" not in kinds(view)
    assert not any(e.kind == "note" and "changed" in e.data for e in view.entries), "the messages are no change"
    with ArtemisManagement.from_cluster(primary) as artemis:
        assert artemis.queue(queue).consumer_count == 1, "the stuck consumer is closed, the healthy one kept"
    consumed_once(healthy, sent, stop_traffic)


def test_a_stuck_consumer_gone_while_the_gate_waits_is_asked_again_showing_it_and_one_answer_closes_the_other(
        primary, live_queue, runbook_env):
    """The re-plan keeps the approved connections (sampling again would take a window: a consumer
    stuck meanwhile is left for another run) less those that closed meanwhile: a changed intent."""
    queue, sent, healthy, _, stop_traffic = live_queue
    with hung_consumer(primary, queue, "stuck-consumer-2", 20):  # a second pod hangs too
        settings, catalog, run_id, view = waiting_drain(runbook_env, queue)
        rows = [dict(zip(journal.last(view.entries, "plan").data["columns"], r))
                for r in journal.last(view.entries, "plan").data["rows"]]
        assert sorted(r["held"] for r in rows) == [20, 50], rows
        [gone] = [r["connection"] for r in rows if r["client id"].startswith("stuck-consumer-2-")]
    with ArtemisManagement.from_cluster(primary) as artemis:  # its pod restarted while the gate waits
        wait_for(lambda: artemis.queue(queue).consumer_count == 2, what="the second pod's connection to close")
    runs.answer_gate(settings, catalog, run_id, True, "grace", "")
    note, asked = asked_again(wait_until(run_id, at_second_gate, timeout=120))
    assert note.data["changed"] == [f"{gone}: no longer in the plan"], note.data
    assert f"- {gone}: no longer in the plan" in asked.data["markdown"]
    assert [r[4] for r in asked.data["rows"]] == [50], "the first pod's connection is still to close"
    with ArtemisManagement.from_cluster(primary) as artemis:
        assert artemis.queue(queue).consumer_count == 2, "nothing closed before the new version is approved"

    runs.answer_gate(settings, catalog, run_id, True, "grace", "the other one is still hung")  # one answer
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert "approval_refused" not in kinds(view)
    with ArtemisManagement.from_cluster(primary) as artemis:
        assert artemis.queue(queue).consumer_count == 1, "the stuck consumer is closed, the healthy one kept"
    consumed_once(healthy, sent, stop_traffic)


def test_an_unknown_queue_is_refused_before_a_run_exists(clusters, unique, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    runbook = catalog.get(RUNBOOK)
    with pytest.raises(ParameterError, match="queue: 'gone-"):
        dry_run(runbook.validate_parameters({"cluster": "primary", "queue": unique("gone"), "window_s": "1"}),
                clusters, settings)
    with pytest.raises(ParameterError, match="window_s"):
        runbook.validate_parameters({"cluster": "primary", "queue": "q", "window_s": "-1"})
