"""Messages into and out of RabbitMQ queues over AMQP, for tests: publish messages with unique ids,
take every message back, so that a loss or a duplicate shows.

    ids = publish(amqp_url, queue, [f"m{i}" for i in range(100)])     # declares a durable queue
    taken = take_all(amqp_url, queue)                                 # [("m0", {}), ("m1", {}), ...]

Each call opens its own connection (named, so it can be told apart in the management UI) and closes it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pika

from mq_runbooks.integrations.rabbitmq_amqp import open_amqp


def publish(amqp_url: str, queue: str, ids: Sequence[str], *, vhost: str = "/", body: bytes | None = None,
            persistent: bool = True, headers: Mapping[str, dict] | None = None, create: bool = True,
            quorum: bool = False, confirm: bool = False) -> list[str]:
    """Publish one message per id to `queue` (default exchange), with that message_id, the id as body
    unless `body` is given, and the headers `headers` holds for the id. `create` declares the queue
    durable (a quorum queue with `quorum`); otherwise it must exist. `confirm` waits for the broker to
    confirm each message. Returns the ids."""
    connection = open_amqp(amqp_url, vhost, "test-publish")
    try:
        channel = connection.channel()
        if confirm:
            channel.confirm_delivery()
        if create:
            channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"} if quorum else {})
        else:
            channel.queue_declare(queue, passive=True)
        for message_id in ids:
            properties = pika.BasicProperties(message_id=message_id, delivery_mode=2 if persistent else None,
                                              headers=(headers or {}).get(message_id))
            channel.basic_publish("", queue, message_id.encode() if body is None else body, properties)
    finally:
        connection.close()
    return list(ids)


def take_all(amqp_url: str, queue: str, *, vhost: str = "/", delete: bool = False) -> list[tuple[str | None, dict]]:
    """Take (and ack) every message now in the queue: (message_id, headers) of each, in order. `delete`
    deletes the queue afterwards."""
    connection = open_amqp(amqp_url, vhost, "test-take")
    taken: list[tuple[str | None, dict]] = []
    try:
        channel = connection.channel()
        while True:
            method, properties, _body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            taken.append((properties.message_id, properties.headers or {}))
        if delete:
            channel.queue_delete(queue)
    finally:
        connection.close()
    return taken


def taken_ids(amqp_url: str, queue: str, *, vhost: str = "/") -> list[str | None]:
    """The message ids of every message now in the queue, in order (the queue is emptied)."""
    return [message_id for message_id, _ in take_all(amqp_url, queue, vhost=vhost)]
