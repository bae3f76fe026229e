"""mq_runbooks.integrations.rabbitmq against the real `primary` node of the local stack.

One scene is built once for the module (a backlog queue and a stuck consumer) and the tests read
it: the management API refreshes statistics every 5 s, so the wait is paid once, not per test.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import pika
import pika.exceptions
import pytest

from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.integrations.rabbitmq import RabbitManagement

BACKLOG = 5  # messages published to each queue of the scene
PREFETCH = 3  # the stuck consumer's prefetch: it holds this many and acks none
STATS_WAIT_S = 30.0  # statistics refresh every 5 s; a loaded machine can take a few rounds

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout_s: float = STATS_WAIT_S) -> T:
    """Call `probe` until it returns something other than None; fail after `timeout_s` saying `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"after {timeout_s:g}s still waiting for: {what}")
        time.sleep(0.25)


@dataclass
class Scene:
    backlog_queue: str  # BACKLOG messages, no consumer; the name needs URL-encoding
    stuck_queue: str  # BACKLOG messages, one consumer holding PREFETCH unacked
    consumer_tag: str
    client_name: str  # the stuck consumer's connection_name
    consumer_connection: pika.BlockingConnection


@pytest.fixture(scope="module")
def primary(clusters):
    return clusters.rabbit_cluster("primary")


@pytest.fixture(scope="module")
def rabbit(primary) -> Iterator[RabbitManagement]:
    with RabbitManagement.from_cluster(primary) as client:
        yield client


@pytest.fixture(scope="module")
def scene(primary, rabbit) -> Iterator[Scene]:
    tag = uuid.uuid4().hex[:8]
    scene = Scene(
        backlog_queue=f"runbook-test/backlog {tag}",
        stuck_queue=f"runbook-test-stuck-{tag}",
        consumer_tag=f"stuck-consumer-{tag}",
        client_name=f"runbook-test-consumer-{tag}",
        consumer_connection=None,  # type: ignore[arg-type]
    )
    admin = pika.BlockingConnection(pika.URLParameters(primary.amqp_url.get_secret_value()))
    try:
        channel = admin.channel()
        for queue in (scene.backlog_queue, scene.stuck_queue):
            channel.queue_declare(queue, durable=True)
            for number in range(BACKLOG):
                channel.basic_publish("", queue, f"message {number}".encode())

        parameters = pika.URLParameters(primary.amqp_url.get_secret_value())
        parameters.client_properties = {"connection_name": scene.client_name}
        scene.consumer_connection = pika.BlockingConnection(parameters)
        consumer = scene.consumer_connection.channel()
        consumer.basic_qos(prefetch_count=PREFETCH)
        consumer.basic_consume(scene.stuck_queue, lambda *delivery: None, consumer_tag=scene.consumer_tag)
        scene.consumer_connection.process_data_events(time_limit=0.2)

        def settled() -> bool | None:
            backlog = rabbit.queue("/", scene.backlog_queue)
            stuck = rabbit.queue("/", scene.stuck_queue)
            # This scene's own consumer and channel (other tests' consumers may hold PREFETCH too).
            ours = {c.channel_name for c in rabbit.consumers(vhost="/", queue=scene.stuck_queue)}
            holding = [c for c in rabbit.channels() if c.name in ours and c.messages_unacknowledged == PREFETCH]
            listed = any(c.client_provided_name == scene.client_name for c in rabbit.connections())
            settled = backlog.messages_ready == BACKLOG and stuck.messages_unacknowledged == PREFETCH
            return True if settled and holding and listed else None

        eventually(settled, f"{BACKLOG} ready in the backlog queue, {PREFETCH} unacked on a listed consumer's channel")
        yield scene
    finally:
        try:
            cleanup = admin.channel()
            for queue in (scene.backlog_queue, scene.stuck_queue):
                cleanup.queue_delete(queue)
            admin.close()
        finally:
            if scene.consumer_connection is not None and scene.consumer_connection.is_open:
                try:
                    scene.consumer_connection.close()
                except pika.exceptions.AMQPError:
                    pass  # closed by the management API, and the client had not read that yet


def test_overview_names_the_cluster_and_counts_the_scene(rabbit, scene):
    overview = rabbit.overview()
    assert overview.cluster_name
    assert overview.rabbitmq_version.count(".") == 2
    assert overview.erlang_version
    assert "@" in overview.node
    assert overview.queues >= 2
    assert overview.connections >= 2 and overview.channels >= 2 and overview.consumers >= 1
    assert overview.messages_ready >= BACKLOG
    assert overview.messages_unacknowledged >= PREFETCH


def test_queue_shows_its_backlog_and_names_are_url_encoded(rabbit, scene):
    backlog = rabbit.queue("/", scene.backlog_queue)
    assert (backlog.vhost, backlog.name, backlog.type, backlog.durable) == ("/", scene.backlog_queue, "classic", True)
    assert (backlog.messages_ready, backlog.messages_unacknowledged, backlog.consumers) == (BACKLOG, 0, 0)
    assert backlog.deliver_rate == 0.0 and backlog.ack_rate == 0.0
    assert backlog in rabbit.queues("/")
    assert scene.backlog_queue in {queue.name for queue in rabbit.queues()}


def test_stuck_consumer_is_visible_on_queue_consumer_and_channel(rabbit, scene):
    stuck = rabbit.queue("/", scene.stuck_queue)
    assert (stuck.messages_ready, stuck.messages_unacknowledged, stuck.consumers) == (BACKLOG - PREFETCH, PREFETCH, 1)

    [consumer] = rabbit.consumers(vhost="/", queue=scene.stuck_queue)
    assert (consumer.queue, consumer.vhost, consumer.consumer_tag) == (scene.stuck_queue, "/", scene.consumer_tag)
    assert consumer.prefetch_count == PREFETCH and consumer.ack_required
    assert consumer.peer_host == "127.0.0.1" and consumer.peer_port
    assert consumer in rabbit.consumers()

    # /api/channels follows /api/consumers by up to one statistics interval under load.
    channel = eventually(lambda: next((c for c in rabbit.channels() if c.name == consumer.channel_name), None),
                         f"channel {consumer.channel_name} in /api/channels")
    assert channel.connection_name == consumer.connection_name
    assert (channel.messages_unacknowledged, channel.prefetch_count, channel.consumer_count) == (PREFETCH, PREFETCH, 1)
    assert channel.ack_rate == 0.0
    assert channel.user == "guest" and channel.peer_host == "127.0.0.1"


def test_connection_is_listed_with_the_name_the_client_gave(rabbit, scene):
    [connection] = [c for c in rabbit.connections() if c.client_provided_name == scene.client_name]
    [consumer] = rabbit.consumers(vhost="/", queue=scene.stuck_queue)
    assert connection.name == consumer.connection_name
    # not connection.channels: it reads 0 until a second statistics refresh (up to ~10 s here)
    assert (connection.user, connection.vhost, connection.state) == ("guest", "/", "running")
    assert connection.peer_host == "127.0.0.1" and connection.peer_port == consumer.peer_port
    assert datetime.now(timezone.utc) - connection.connected_at < timedelta(minutes=5)


def test_unknown_names_raise_broker_error_naming_them(rabbit, scene):
    with pytest.raises(BrokerError, match=r"queue 'no-such-queue' does not exist in vhost '/'"):
        rabbit.queue("/", "no-such-queue")
    with pytest.raises(BrokerError, match=r"vhost 'no-such-vhost' does not exist"):
        rabbit.queues("no-such-vhost")
    with pytest.raises(BrokerError, match=r"connection 'no-such-connection' does not exist"):
        rabbit.close_connection("no-such-connection", "test")


# Runs after the tests above (pytest keeps file order): it ends the scene's consumer.
def test_close_connection_returns_unacked_messages_to_ready(rabbit, scene):
    [connection] = [c for c in rabbit.connections() if c.client_provided_name == scene.client_name]
    rabbit.close_connection(connection.name, "runbook test: stuck consumer")

    # A client that does not read its socket stays listed in state 'closed' (about 30 s here), so
    # look for 'closed or gone', not 'gone'.
    def requeued():
        stuck = rabbit.queue("/", scene.stuck_queue)
        states = {c.state for c in rabbit.connections() if c.name == connection.name}
        ready = (stuck.messages_ready, stuck.messages_unacknowledged, stuck.consumers) == (BACKLOG, 0, 0)
        return stuck if ready and states <= {"closed"} else None

    eventually(requeued, f"connection closed and all {BACKLOG} messages ready again")
    told = "CONNECTION_FORCED - runbook test: stuck consumer"
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker, match=told):
        scene.consumer_connection.process_data_events(time_limit=1)


def test_wrong_password_is_refused_without_echoing_it(primary):
    password = "not-the-password-7f3a"
    with RabbitManagement(primary.management_url, "guest", password, name="primary") as client:
        with pytest.raises(BrokerError) as refused:
            client.overview()
    assert not isinstance(refused.value, UnreachableError)
    assert "refused the credentials of user 'guest'" in str(refused.value)
    assert password not in str(refused.value)


def test_unreachable_management_url_fails_fast():
    started = time.monotonic()
    with RabbitManagement("http://127.0.0.1:1", "guest", "guest", name="primary", timeout_s=2) as client:
        expected = r"rabbitmq cluster 'primary' \(http://127\.0\.0\.1:1\) did not answer within 2s: "
        with pytest.raises(UnreachableError, match=expected):
            client.overview()
    assert time.monotonic() - started < 3


def test_a_server_that_never_answers_times_out(silent_port):
    started = time.monotonic()
    with RabbitManagement(f"http://127.0.0.1:{silent_port}", "guest", "guest", name="primary", timeout_s=1) as client:
        with pytest.raises(UnreachableError, match="did not answer within 1s"):
            client.overview()
    assert time.monotonic() - started < 2.5


def test_policies_of_a_vhost_are_listed_put_and_deleted(rabbit):
    """Issue 27, item 2: a policy's put and delete return the policy they replaced, for a snapshot."""
    from mq_runbooks.integrations.rabbitmq import Policy

    name = f"test-policy-{uuid.uuid4().hex[:8]}"
    policy = Policy("/", name, f"^{name}$", {"max-length": 10}, apply_to="queues", priority=3)
    try:
        assert rabbit.policy("/", name) is None
        assert rabbit.put_policy(policy) is None, "there was none before"
        assert rabbit.policy("/", name) == policy and name in [p.name for p in rabbit.policies("/")]
        changed = Policy("/", name, f"^{name}$", {"max-length": 20}, apply_to="queues")
        assert rabbit.put_policy(changed) == policy, "what it replaced"
        assert rabbit.delete_policy("/", name) == changed
        assert rabbit.policy("/", name) is None and rabbit.delete_policy("/", name) is None
        with pytest.raises(BrokerError, match="vhost 'nosuch-vhost' does not exist"):
            rabbit.policies("nosuch-vhost")
    finally:
        rabbit.send("DELETE", f"/api/policies/%2F/{name}", missing_ok=True)
