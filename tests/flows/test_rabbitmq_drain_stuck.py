"""rabbitmq-drain-stuck end to end on the real primary RabbitMQ: real pika consumers (one that takes its
prefetch and never acks, one healthy), real runs answered through the gate, every message id counted."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika
import pika.exceptions
import pytest

from mq_runbooks.app import runs
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.kit import journal
from mq_runbooks.flows.rabbitmq_drain_stuck import dry_run
from mq_runbooks.integrations.rabbitmq import RabbitManagement
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.rabbitmq_messages import publish, take_all

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "rabbitmq-drain-stuck"
FAST = {"idle_threshold_s": "2", "window_s": "5", "verify_window_s": "5"}


@pytest.fixture
def amqp_url(clusters):
    return clusters.rabbit_cluster("primary").amqp_url.get_secret_value()


def connect(amqp_url, name):
    parameters = pika.URLParameters(amqp_url)
    parameters.client_properties = {"connection_name": name}
    return pika.BlockingConnection(parameters)


class Consumer(threading.Thread):
    """A pika consumer in its own thread (pika's BlockingConnection is not thread-safe).

    stuck: takes `prefetch` messages and never acks. Otherwise it acks each message after `work_s`,
    and rejects (requeue) a message whose id is in `crash_on`, as a consumer that crashes on it would.
    """

    def __init__(self, amqp_url, queue, name, *, prefetch=1, stuck=False, work_s=0.0, crash_on=()):
        super().__init__(daemon=True)
        self.amqp_url, self.queue, self.name_, self.prefetch = amqp_url, queue, name, prefetch
        self.stuck, self.work_s, self.crash_on = stuck, work_s, set(crash_on)
        self.acked: list[str] = []
        self.held: list[str] = []
        self.redelivered: set[str] = set()
        self.closed_reason: str | None = None
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self):
        connection = connect(self.amqp_url, self.name_)
        channel = connection.channel()
        channel.basic_qos(prefetch_count=self.prefetch)
        channel.basic_consume(self.queue, self.on_message, consumer_tag=f"{self.name_}-tag")
        self.ready.set()
        try:
            while not self.stop.is_set():
                connection.process_data_events(time_limit=0.1)
            connection.close()
        except pika.exceptions.ConnectionClosedByBroker as exc:
            self.closed_reason = exc.reply_text

    def on_message(self, channel, method, properties, body):
        message_id = properties.message_id
        if method.redelivered:
            self.redelivered.add(message_id)
        if self.stuck:
            self.held.append(message_id)
            return
        time.sleep(self.work_s)
        if message_id in self.crash_on:
            channel.basic_reject(method.delivery_tag, requeue=True)
            return
        channel.basic_ack(method.delivery_tag)
        self.acked.append(message_id)


def drain_queue(amqp_url, queue):
    """Every message id left in the queue (taken and acked), their headers, and delete the queue."""
    taken = take_all(amqp_url, queue, delete=True)
    return [message_id for message_id, _ in taken], [headers for _, headers in taken]


def wait_for_statistics(clusters, queue, held=5, timeout=20.0, consumers=2):
    """Until the management statistics (refreshed every 5 s) show the stuck channel and both consumers,
    as they would for a consumer stuck for a while in production."""
    deadline = time.monotonic() + timeout
    with RabbitManagement.from_cluster(clusters.rabbit_cluster("primary")) as rabbit:
        while time.monotonic() < deadline:
            channels = [c for c in rabbit.channel_activity() if c.messages_unacknowledged == c.prefetch_count == held]
            if channels and rabbit.queue("/", queue).consumers == consumers:
                return
            time.sleep(0.5)
    raise AssertionError(f"the statistics never showed the stuck consumer of {queue}")


def speed_up_after_action(run_id, healthy):
    """The healthy consumer is slow (so messages wait, as in an incident) until the runbook acted."""
    wait_until(run_id, lambda view: "action" in kinds(view), timeout=60)
    healthy.work_s = 0.005


def consume_until(consumer, expected, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not expected <= set(consumer.acked):
        time.sleep(0.2)
    consumer.stop.set()
    consumer.join(5)


def test_finds_exactly_the_stuck_consumer_closes_it_and_nothing_is_lost(amqp_url, clusters, unique, runbook_env):
    queue = unique("orders")
    ids = [f"m{i}" for i in range(200)]
    publish(amqp_url, queue, ids)
    stuck = Consumer(amqp_url, queue, unique("stuck-consumer"), prefetch=5, stuck=True)
    stuck.start()
    stuck.ready.wait(5)
    time.sleep(0.5)
    healthy = Consumer(amqp_url, queue, unique("healthy-consumer"), prefetch=1, work_s=0.5)
    healthy.start()
    wait_for_statistics(clusters, queue)
    settings, catalog = runbook_env(RUNBOOK)

    run_id = start_runbook(settings, catalog, RUNBOOK, queue=queue, **FAST)
    view = wait_until(run_id, paused, timeout=60)
    plan = journal.last(view.entries, "plan").data
    assert [(c["client_provided_name"], c["unacked"], c["consumer_tags"]) for c in plan["connections"]] == [
        (stuck.name_, 5, [f"{stuck.name_}-tag"])], "exactly the stuck consumer, not the healthy one"
    assert plan["connections"][0]["peer_host"] == "127.0.0.1" and plan["healthy_consumers"] == 1
    assert stuck.closed_reason is None, "nothing is closed before approval"

    runs.answer_gate(settings, catalog, run_id, True, "erin", "stuck since the deploy")
    speed_up_after_action(run_id, healthy)
    view = wait_until(run_id, finished, timeout=60)
    assert view.succeeded, view.message
    assert "mq-runbooks rabbitmq-drain-stuck" in (stuck.closed_reason or "")
    consume_until(healthy, set(ids))
    stuck.join(5)

    assert sorted(healthy.acked) == sorted(ids), "every message reached the healthy consumer exactly once"
    assert set(stuck.held) <= healthy.redelivered, "what the stuck consumer held was redelivered"
    assert drain_queue(amqp_url, queue)[0] == []
    verification = journal.last(view.entries, "verification").data
    assert verification["acks_by_remaining_consumers"] > 0 and verification["closed_gone"]
    order = kinds(view)
    assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")

    # Undo is refused before a run exists, naming what cannot be undone (not a generic "restore by hand").
    for asked in (("--plan",), ("--as", "alice")):
        undo = runbook("restore", run_id, *asked, env={"RUNBOOK_APPROVAL_PROOF": "typed"})
        assert undo.returncode == 2, (undo.stdout, undo.stderr)
        assert "rabbitmq-drain-stuck has nothing a restore run can put back: it cannot undo the connections it " \
               "closed stay closed" in " ".join(undo.stderr.split()), undo.stderr
        assert "Traceback" not in undo.stderr and "started run" not in undo.stdout


def test_poison_message_is_parked_and_the_rest_is_consumed(amqp_url, clusters, unique, runbook_env):
    queue = unique("payments")
    ids = ["poison"] + [f"m{i}" for i in range(300)]  # a backlog the slow consumer cannot finish before the re-plan
    publish(amqp_url, queue, ids[:1], quorum=True)
    connection = connect(amqp_url, "test-crash-loop")
    channel = connection.channel()
    for _ in range(3):  # three consumers crashed on it already: x-delivery-count is 3 from now on
        method, properties, _ = channel.basic_get(queue)
        assert properties.message_id == "poison"
        channel.basic_reject(method.delivery_tag, requeue=True)
    connection.close()
    publish(amqp_url, queue, ids[1:], quorum=True)
    stuck = Consumer(amqp_url, queue, unique("hung-on-poison"), prefetch=5, stuck=True)
    stuck.start()
    stuck.ready.wait(5)
    time.sleep(0.5)
    healthy = Consumer(amqp_url, queue, unique("healthy-consumer"), prefetch=1, work_s=0.5, crash_on={"poison"})
    healthy.start()
    wait_for_statistics(clusters, queue)
    settings, catalog = runbook_env(RUNBOOK)

    run_id = start_runbook(settings, catalog, RUNBOOK, queue=queue, poison_after="2", **FAST)
    view = wait_until(run_id, paused, timeout=60)
    plan = journal.last(view.entries, "plan").data
    assert [c["client_provided_name"] for c in plan["connections"]] == [stuck.name_]
    assert plan["parking"] == [{"queue": queue, "parking_queue": f"{queue}.parking"}]
    runs.answer_gate(settings, catalog, run_id, True, "frank", "")
    speed_up_after_action(run_id, healthy)
    view = wait_until(run_id, finished, timeout=60)
    assert view.succeeded, view.message

    consume_until(healthy, set(ids) - {"poison"})
    parked, headers = drain_queue(amqp_url, f"{queue}.parking")
    assert parked == ["poison"] and headers[0]["x-parked-from-queue"] == queue
    assert sorted(healthy.acked) == sorted(set(ids) - {"poison"}), "every other message consumed exactly once"
    assert drain_queue(amqp_url, queue)[0] == []
    parking = [e for e in view.entries if e.kind == "action" and "parked" in e.summary][0].data
    assert parking["moved"] == 1 and parking["moved_ids"] == ["poison"] and parking["parking_created"]


def test_bad_parameters_are_refused_naming_the_parameter(amqp_url, clusters, unique, runbook_env):
    queue = unique("classic")
    publish(amqp_url, queue, ["a"])
    settings, catalog = runbook_env(RUNBOOK)
    runbook = catalog.get(RUNBOOK)
    with pytest.raises(ParameterError, match="backlog_to needs a queue"):
        runbook.validate_parameters({"cluster": "primary", "backlog_to": "elsewhere"})
    with pytest.raises(ParameterError, match="window_s"):
        runbook.validate_parameters({"cluster": "primary", "queue": queue, "window_s": "1"})
    params = runbook.validate_parameters({"cluster": "primary", "queue": queue, "poison_after": "3", **FAST})
    with pytest.raises(ParameterError, match="poison_after.*classic queue.*quorum") as refused:
        dry_run(params, clusters)
    assert refused.value.problems[0][0] == "poison_after"
    missing = runbook.validate_parameters({"cluster": "primary", "queue": unique("missing"), **FAST})
    with pytest.raises(ParameterError, match="queue: no queue"):
        dry_run(missing, clusters)
    drain_queue(amqp_url, queue)


@pytest.mark.parametrize("bad, expected", [
    (["-p", "vhost=no-such-vhost"], "vhost: no vhost 'no-such-vhost' on RabbitMQ cluster primary (vhosts there: /"),
    (["-p", "vhost=no-such-vhost", "-p", "queue=orders"], "vhost: no vhost 'no-such-vhost'"),
    (["-p", "queue=no-such-queue"], "queue: no queue 'no-such-queue' in vhost '/' on primary (queues there:"),
])
def test_an_unknown_vhost_or_queue_exits_2_before_a_run_exists(bad, expected):
    """Not "nothing to do": bad input, refused by the CLI's preflight before any sampling or run."""
    for command in ("plan", "run"):
        result = subprocess.run([str(Path(sys.executable).parent / "runbook"), command, RUNBOOK, "-p", "cluster=primary",
                                 *bad], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert expected in result.stderr and "started run" not in result.stdout


def test_a_verify_that_sees_no_progress_fails_saying_what_changed_and_how_to_go_on(amqp_url, clusters, unique,
                                                                                   runbook_env):
    """The stuck consumer is the only one: closing it requeues its messages, but nobody acks them."""
    queue = unique("lonely")
    publish(amqp_url, queue, [f"m{i}" for i in range(50)])
    stuck = Consumer(amqp_url, queue, unique("only-consumer"), prefetch=5, stuck=True)
    stuck.start()
    stuck.ready.wait(5)
    wait_for_statistics(clusters, queue, consumers=1)
    settings, catalog = runbook_env(RUNBOOK)
    run_id = start_runbook(settings, catalog, RUNBOOK, queue=queue, **FAST)
    wait_until(run_id, paused, timeout=60)
    runs.answer_gate(settings, catalog, run_id, True, "erin", "")
    view = wait_until(run_id, finished, timeout=60)
    stuck.join(5)
    assert not view.succeeded, "no consumer acked anything: not a success"
    verification = journal.last(view.entries, "verification")
    assert verification.data["ok"] is False and verification.data["acks_by_remaining_consumers"] == 0
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "failed"
    assert "closed 1 connection(s); their messages were requeued" in outcome.summary
    assert "cannot be reopened" in outcome.summary
    assert f"{queue} has no consumer left: start healthy consumers" in outcome.summary
    assert journal.last(view.entries, "rollback") is None, "nothing is claimed restored"
    assert sorted(drain_queue(amqp_url, queue)[0]) == sorted(f"m{i}" for i in range(50)), "nothing lost"
