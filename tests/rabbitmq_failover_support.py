"""Helpers shared by the rabbitmq-failover tests: throw-away vhosts on both clusters, and messages
with unique ids published and counted over AMQP (so a loss or a duplicate shows)."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from mq_runbooks.integrations.rabbitmq import RabbitManagement
from tests.rabbitmq_messages import publish, taken_ids

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
    return publish(amqp_url(cluster), queue, [f"{prefix}-{i}" for i in range(count)], vhost=vhost, create=False,
                   confirm=True)


def drain_ids(cluster, vhost: str, queue: str) -> list[str | None]:
    """Consume (and ack) every message now in the queue; their message ids, in order."""
    return taken_ids(amqp_url(cluster), queue, vhost=vhost)
