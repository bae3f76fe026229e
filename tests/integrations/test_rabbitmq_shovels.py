"""Backlogs moved by dynamic shovels between the real primary and standby RabbitMQ nodes."""
from __future__ import annotations

import select
import time

import pytest

from mq_runbooks.integrations import rabbitmq_shovels as rabbit_shovels

from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.integrations.rabbitmq_amqp import vhost_uri
from mq_runbooks.integrations.rabbitmq_shovels import (
    QueueMove, delete_shovel, local_uri, queue_depth, shovel_state, start_shovel, wait_for_shovels,
)
from tests.rabbitmq_failover_support import amqp_url, api, drain_ids, publish_ids, scratch_vhost


@pytest.fixture
def pair(clusters):
    return clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")


def declare_queue(cluster, vhost, queue):
    with api(cluster) as rabbit:
        rabbit.send("PUT", f"/api/queues/{vhost}/{queue}", {"durable": True})


def test_a_backlog_moves_whole_with_nothing_lost_or_duplicated(pair):
    primary, standby = pair
    with scratch_vhost(primary, standby, create_on=2) as vhost, api(standby) as host:
        declare_queue(primary, vhost, "orders")
        declare_queue(standby, vhost, "orders")
        sent = publish_ids(primary, vhost, "orders", 500)
        assert queue_depth(amqp_url(primary), vhost, "orders") == 500
        move = QueueMove(vhost, "orders", "runbook-move-test")

        start_shovel(host, move, src_uri=vhost_uri(amqp_url(primary), vhost), dest_uri=local_uri(vhost))
        outcome = wait_for_shovels(host, [move], timeout_s=60, stall_s=15,
                                   progress=lambda: queue_depth(amqp_url(standby), vhost, "orders"))

        assert outcome == {"orders": "done"}
        assert shovel_state(host, move) is None, "the shovel deleted itself after the queue length"
        assert queue_depth(amqp_url(primary), vhost, "orders") == 0
        arrived = drain_ids(standby, vhost, "orders")
        assert sorted(arrived) == sorted(sent) and len(set(arrived)) == len(arrived)
        assert arrived == sent, "one shovel keeps the queue's order"


def test_a_shovel_that_cannot_reach_its_source_is_given_up_and_deleted(pair):
    primary, standby = pair
    with scratch_vhost(standby) as vhost, api(standby) as host:
        declare_queue(standby, vhost, "orders")
        move = QueueMove(vhost, "orders", "runbook-move-dead-source")
        start_shovel(host, move, src_uri="amqp://guest:guest@127.0.0.1:1/", dest_uri=local_uri(vhost))
        outcome = wait_for_shovels(host, [move], timeout_s=30, stall_s=2,
                                   progress=lambda: queue_depth(amqp_url(standby), vhost, "orders"))
        assert outcome["orders"].startswith("stalled 2s: ")
        assert shovel_state(host, move) is None and delete_shovel(host, move) is False


def test_queue_depth_names_what_is_missing_or_unreachable(pair):
    primary, _ = pair
    with pytest.raises(BrokerError, match="queue 'no-such-queue' in vhost '/'"):
        queue_depth(amqp_url(primary), "/", "no-such-queue")
    with pytest.raises(UnreachableError, match="did not answer"):
        queue_depth("amqp://guest:guest@127.0.0.1:1/", "/", "orders", timeout_s=2)


def test_vhost_uris_keep_credentials_and_encode_the_vhost():
    assert vhost_uri("amqp://u:p@h:5673/?heartbeat=10", "/") == "amqp://u:p@h:5673/%2F?heartbeat=10"
    assert vhost_uri("amqp://u:p@h:5673/", "a b") == "amqp://u:p@h:5673/a%20b"
    assert local_uri("/") == "amqp:///%2F"


def test_counts_reuse_one_connection_and_reopen_it_when_the_broker_closed_it(pair):
    primary, _ = pair
    url = amqp_url(primary)
    with scratch_vhost(primary) as vhost, api(primary) as rabbit:
        declare_queue(primary, vhost, "orders")
        publish_ids(primary, vhost, "orders", 7)
        assert queue_depth(url, vhost, "orders") == 7
        kept = rabbit_shovels._counters[(url, vhost)]
        with pytest.raises(BrokerError, match="no-such-queue"):
            queue_depth(url, vhost, "no-such-queue")  # closes a channel, not the kept connection
        assert queue_depth(url, vhost, "orders") == 7 and rabbit_shovels._counters[(url, vhost)] is kept

        sock = kept._impl._transport._sock
        deadline = time.monotonic() + 30
        while not (ours := [c for c in rabbit.connections() if c.peer_port == sock.getsockname()[1]]):
            assert time.monotonic() < deadline, "the kept connection never showed in the management API"
            time.sleep(0.2)
        rabbit.close_connection(ours[0].name, "closed by the test")
        deadline = time.monotonic() + 30
        while not select.select([sock], [], [], 0.2)[0]:  # the broker's Connection.Close, not read yet
            assert time.monotonic() < deadline, "the broker did not close the connection"

        assert queue_depth(url, vhost, "orders") == 7, "a connection the broker closed is opened again"
        assert rabbit_shovels._counters[(url, vhost)] is not kept
        rabbit_shovels.close_counters()
        assert (url, vhost) not in rabbit_shovels._counters
