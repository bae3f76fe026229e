"""Helpers shared by the rabbitmq-failover tests: throw-away vhosts on both clusters, and messages
with unique ids published and counted over AMQP (so a loss or a duplicate shows)."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pika

from mq_runbooks.integrations.rabbitmq import RabbitManagement
from mq_runbooks.integrations.rabbitmq_amqp import vhost_uri

FULL = {"configure": ".*", "write": ".*", "read": ".*"}


def api(cluster) -> RabbitManagement:
    return RabbitManagement.from_cluster(cluster)


def amqp_url(cluster) -> str:
    return cluster.amqp_url.get_secret_value()


@contextlib.contextmanager
def scratch_vhost(*clusters, create_on: int = 1) -> Iterator[str]:
    """A fresh vhost, created on the first `create_on` clusters (guest may use it), deleted from all after."""
    vhost = f"failover-{uuid.uuid4().hex[:8]}"
    for cluster in clusters[:create_on]:
        with api(cluster) as rabbit:
            rabbit.send("PUT", f"/api/vhosts/{vhost}")
            rabbit.send("PUT", f"/api/permissions/{vhost}/guest", FULL)
    try:
        yield vhost
    finally:
        for cluster in clusters:
            with contextlib.suppress(Exception), api(cluster) as rabbit:
                rabbit.send("DELETE", f"/api/vhosts/{vhost}")


def publish_ids(cluster, vhost: str, queue: str, count: int, *, prefix: str = "m") -> list[str]:
    """Publish `count` persistent messages with unique message ids to a queue; wait for the confirms."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    connection = pika.BlockingConnection(pika.URLParameters(vhost_uri(amqp_url(cluster), vhost)))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True, passive=True)
        for message_id in ids:
            channel.basic_publish("", queue, message_id.encode(),
                                  pika.BasicProperties(message_id=message_id, delivery_mode=2))
    finally:
        connection.close()
    return ids


def drain_ids(cluster, vhost: str, queue: str) -> list[str]:
    """Consume (and ack) every message now in the queue; their message ids, in order."""
    connection = pika.BlockingConnection(pika.URLParameters(vhost_uri(amqp_url(cluster), vhost)))
    ids: list[str] = []
    try:
        channel = connection.channel()
        while True:
            method, properties, _body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return ids
            ids.append(properties.message_id)
    finally:
        connection.close()
