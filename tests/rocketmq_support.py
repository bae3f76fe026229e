"""Helpers for tests against the real RocketMQ of the local stack: topics and groups, producing through
the proxy (gRPC) or straight to the broker, a consumer that pulls from the group's committed offsets
and commits what it read (what a push consumer does), and RocketMQ's own `mqadmin` beside us."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.integrations.rocketmq import RocketMQAdmin, StoredMessage, retry_topic

REPO = Path(__file__).resolve().parent.parent


ROCKETMQ_SERVICES = ("rocketmq-namesrv", "rocketmq-broker", "rocketmq-proxy")


def rocketmq_primary():
    """The stack's RocketMQ cluster, its three services started if they are not running (only those:
    a RocketMQ test does not wait on the rest of the stack)."""
    subprocess.run([str(REPO / "dev" / "stack"), "up", *ROCKETMQ_SERVICES], check=True, stdout=subprocess.DEVNULL)
    return load_clusters(REPO / "clusters.yaml").rocketmq_cluster("primary")


def wait_for(condition, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not hold within {timeout}s")


def make_topic(cluster, topic: str, queues: int) -> None:
    with RocketMQAdmin.from_cluster(cluster) as admin:
        admin.create_topic(topic, queues)
        wait_for(lambda: len(admin.queues(topic)) == queues if admin.topic_exists(topic) else False,
                 what=f"the route of {topic}")


def make_group(cluster, group: str, retry_max_times: int = 16) -> None:
    """The subscription group and its %RETRY% topic, as a consumer's first start leaves them."""
    with RocketMQAdmin.from_cluster(cluster) as admin:
        admin.create_group(group, retry_max_times)
        admin.create_topic(retry_topic(group), 1)


def produce(cluster, topic: str, keys: list[str], tag: str = "test") -> None:
    """One message per key, round robin over the topic's queues, straight to the broker."""
    with RocketMQAdmin.from_cluster(cluster) as admin:
        queues = admin.queues(topic)
        for index, key in enumerate(keys):
            broker, queue_id = queues[index % len(queues)]
            admin.send(topic, f"body of {key}".encode(), {"KEYS": key, "TAGS": tag}, broker, queue_id)


def consume(cluster, group: str, topic: str, commit: bool = True) -> list[StoredMessage]:
    """Everything after the group's committed offsets on each queue (from the start where it has none);
    with `commit`, the offsets are committed past what was read."""
    read: list[StoredMessage] = []
    with RocketMQAdmin.from_cluster(cluster) as admin:
        for broker, queue_id in admin.queues(topic):
            start = admin.consumer_offset(group, topic, broker, queue_id) or 0
            end = admin.max_offset(topic, broker, queue_id)
            read += admin.read_queue(topic, broker, queue_id, start, end, group)  # a pull of the group's
            if commit and end > start:
                admin.update_offset(group, topic, broker, queue_id, end)
    return read


def mqadmin(*args: str, timeout: float = 240) -> str:
    """RocketMQ's own admin tool (dev/stack mqadmin: a JVM) against the stack's name server; its stdout."""
    done = subprocess.run([str(REPO / "dev" / "stack"), "mqadmin", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ)
    assert done.returncode == 0 and "Exception" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done.stdout


def consumer_progress(group: str) -> dict[tuple[str, str, int], tuple[int, int, int]]:
    """`mqadmin consumerProgress -g GROUP` read: (topic, broker, queue) -> (broker offset, consumer offset, diff)."""
    rows = {}
    for line in mqadmin("consumerProgress", "-g", group).splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[2].isdigit() and re.fullmatch(r"-?\d+", cells[3]):
            rows[(cells[0], cells[1], int(cells[2]))] = (int(cells[3]), int(cells[4]), int(cells[5]))
    return rows


def dead_letter_all(cluster, group: str, topic: str) -> list[str]:
    """What a consumer of `group` does with messages it gives up on, for every message of `topic`: the
    broker stores each in %DLQ%<group> (CONSUMER_SEND_MSG_BACK, no retries left). Their keys."""
    with RocketMQAdmin.from_cluster(cluster) as admin:
        keys = []
        for broker, queue_id in admin.queues(topic):
            for message in admin.read_queue(topic, broker, queue_id, 0, admin.max_offset(topic, broker, queue_id)):
                admin.send_to_dead_letters(group, message, broker)
                keys.append(message.keys)
    return keys
