"""The confirmed move against the real primary RabbitMQ: every message id counted on both sides."""
from __future__ import annotations

import pytest

from mq_runbooks.integrations.rabbitmq_amqp import open_amqp
from mq_runbooks.integrations.rabbitmq_moves import delivered_more_than, ensure_queue, move_messages
from tests.rabbitmq_messages import publish as publish_messages
from tests.rabbitmq_messages import take_all


@pytest.fixture
def amqp_url(clusters):
    return clusters.rabbit_cluster("primary").amqp_url.get_secret_value()


@pytest.fixture
def queues(amqp_url, unique):
    """(source, destination) names; both deleted afterwards."""
    names = unique("move-src"), unique("move-dst")
    yield names
    connection = open_amqp(amqp_url, "/", "test-cleanup")
    for name in names:
        connection.channel().queue_delete(name)
    connection.close()


def publish(amqp_url, queue, ids, headers=None, quorum=False):
    publish_messages(amqp_url, queue, ids, body=b"x" * 1024, persistent=False, headers=headers, quorum=quorum)


def test_move_all_is_confirmed_exactly_once(amqp_url, queues):
    source, destination = queues
    ids = [f"m{i}" for i in range(2000)]
    publish(amqp_url, source, ids)
    assert ensure_queue(amqp_url, "/", destination) is True
    assert ensure_queue(amqp_url, "/", destination) is False

    report = move_messages(amqp_url, "/", source, destination, idle_s=0.5, headers={"x-parked-by": "test"})

    assert report.error is None and report.moved == report.inspected == 2000 and report.returned == 0
    moved = take_all(amqp_url, destination)
    assert [m for m, _ in moved] == ids, "all, once each, in order"
    assert all(h["x-parked-by"] == "test" for _, h in moved)
    assert take_all(amqp_url, source) == []
    assert sorted(report.moved_ids) == sorted(ids)


def test_only_selected_messages_move_and_the_rest_stay(amqp_url, queues):
    source, destination = queues
    ids = [f"m{i}" for i in range(50)]
    publish(amqp_url, source, ids, headers={"m7": {"x-delivery-count": 5}, "m30": {"x-delivery-count": 2}})
    ensure_queue(amqp_url, "/", destination)

    report = move_messages(amqp_url, "/", source, destination, select=delivered_more_than(3), idle_s=0.5)

    assert (report.moved, report.inspected, report.returned, report.moved_ids) == (1, 50, 49, ["m7"])
    assert [m for m, _ in take_all(amqp_url, destination)] == ["m7"]
    assert sorted(m for m, _ in take_all(amqp_url, source)) == sorted(set(ids) - {"m7"})


def test_quorum_queue_counts_deliveries_and_the_limit_bounds_the_scan(amqp_url, queues):
    source, destination = queues
    publish(amqp_url, source, ["poison"], quorum=True)
    connection = open_amqp(amqp_url, "/", "test-crash")
    channel = connection.channel()
    for _ in range(2):
        method, _, _ = channel.basic_get(source)
        channel.basic_reject(method.delivery_tag, requeue=True)
    connection.close()
    publish(amqp_url, source, [f"m{i}" for i in range(20)], quorum=True)
    ensure_queue(amqp_url, "/", destination)

    scan = move_messages(amqp_url, "/", source, destination, select=delivered_more_than(1), limit=5, idle_s=0.5)

    assert scan.moved_ids == ["poison"] and scan.inspected + scan.returned >= 5
    assert len({m for m, _ in take_all(amqp_url, source)}) == 20


def test_missing_destination_moves_nothing_and_loses_nothing(amqp_url, queues):
    source, destination = queues
    ids = [f"m{i}" for i in range(100)]
    publish(amqp_url, source, ids)

    report = move_messages(amqp_url, "/", source, destination, idle_s=0.5)

    assert report.error and destination in report.error
    assert report.moved == 0
    assert sorted(m for m, _ in take_all(amqp_url, source)) == sorted(ids)
