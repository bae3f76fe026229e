"""Helpers for tests against the real Artemis of the local stack: fill a queue over AMQP, dead-letter
its messages the way Artemis does (sendMessagesToDeadLetterAddress: _AMQ_ORIG_QUEUE and the rest are
set by Artemis itself), read a queue empty, and delete what a test made."""
from __future__ import annotations

import time

from mq_runbooks.integrations.artemis import ArtemisManagement
from mq_runbooks.integrations.artemis_messages import list_messages
from mq_runbooks.integrations.artemis_amqp import AmqpSession


def wait_for(condition, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {timeout}s")


def produce(cluster, queue, ids, **properties):
    """Send one message per id (property msg_id) to `queue`, confirmed by the broker."""
    with AmqpSession.from_cluster(cluster, "test-producer") as amqp:
        sender = amqp.sender(queue)
        for message_id in ids:
            sender.send(f"body of {message_id}", {"msg_id": message_id, **properties})
        sender.close()
    with ArtemisManagement.from_cluster(cluster) as artemis:
        wait_for(lambda: artemis.queue(queue).message_count >= len(ids), what=f"{len(ids)} messages in {queue}")


def dead_letter(cluster, queue, filter=""):
    """Artemis' own sendMessagesToDeadLetterAddress on `queue`: how many went to its DLA."""
    with ArtemisManagement.from_cluster(cluster) as artemis:
        return int(artemis.exec(artemis.queue_mbean(queue), "sendMessagesToDeadLetterAddress", filter))


def ids_in(cluster, queue, filter=""):
    """The msg_id of every message in `queue` (browsing, nothing consumed)."""
    with ArtemisManagement.from_cluster(cluster) as artemis:
        return [m.properties.get("msg_id") for m in list_messages(artemis, queue, filter)]


def consume_all(cluster, queue, expected, timeout=60.0):
    """Consume `queue` until `expected` messages arrived and it is empty; their msg_ids (with repeats)."""
    with AmqpSession.from_cluster(cluster, "test-consumer") as amqp:
        received = amqp.receive(queue, expected + 1, timeout_s=2.0)  # one more: none left, or a duplicate shows
    return [r.properties.get("msg_id") for r in received]


def remove_queues(cluster, *queues):
    with ArtemisManagement.from_cluster(cluster) as artemis:
        existing = set(artemis.queue_names())
        for queue in queues:
            if queue in existing:
                artemis.destroy_queue(queue)


def purge_dlq(cluster, filter, dlq="DLQ"):
    with ArtemisManagement.from_cluster(cluster) as artemis:
        artemis.exec(artemis.queue_mbean(dlq), "removeMessages(java.lang.String)", filter)
