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


_HEART_BEAT = 34  # RequestCode.HEART_BEAT


class OnlineConsumer:
    """A consumer of `group` that the brokers list as online (GET_CONSUMER_CONNECTION_LIST), registered the
    way every Java client registers: a HEART_BEAT request carrying its consumer data, repeated on the same
    connection (the broker lists a client while its channel is open and heartbeats arrive within 120 s).
    With `poison`, it also consumes `topic` as an orderly consumer does: it pulls from the group's offset
    on each queue, commits past each message it consumed, and retries the poison message in place, for
    ever, so that queue's offset stays at it while later messages wait (what it consumed: `consumed`)."""

    def __init__(self, cluster, group: str, topic: str, poison: str | None = None, client_id: str | None = None):
        import threading
        self.cluster, self.group, self.topic, self.poison = cluster, group, topic, poison
        self.client_id = client_id or f"127.0.0.1@py-{os.getpid()}-{group}"
        self.consumed: list[str] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._admin = RocketMQAdmin.from_cluster(cluster)
        self._beats = {}  # broker address -> its own connection (a channel the broker keeps as the client's)

    def _heartbeat(self) -> None:
        import json as _json
        from mq_runbooks.integrations.rocketmq_remoting import Connection
        data = {"clientID": self.client_id, "producerDataSet": [], "consumerDataSet": [{
            "groupName": self.group, "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET", "unitMode": False,
            "subscriptionDataSet": [{"topic": self.topic, "subString": "*", "tagsSet": [], "codeSet": [],
                                     "subVersion": int(time.time() * 1000), "expressionType": "TAG"}]}]}
        for address in self._admin.brokers().values():
            connection = self._beats.setdefault(address, Connection(address, 10.0))
            connection.call(_HEART_BEAT, body=_json.dumps(data).encode(), what="heartbeat")

    def _consume_once(self) -> None:
        admin = self._admin
        for broker, queue_id in admin.queues(self.topic):
            start = admin.consumer_offset(self.group, self.topic, broker, queue_id) or 0
            end = admin.max_offset(self.topic, broker, queue_id)
            for message in admin.read_queue(self.topic, broker, queue_id, start, end, self.group):
                if message.keys == self.poison:
                    self.failures += 1  # an exception in the listener: retried in place
                    break
                self.consumed.append(message.keys)
                admin.update_offset(self.group, self.topic, broker, queue_id, message.queue_offset + 1)

    def _loop(self) -> None:
        beat_at = 0.0
        while not self._stop.is_set():
            if time.monotonic() - beat_at > 5:
                self._heartbeat()
                beat_at = time.monotonic()
            if self.poison is not None:
                self._consume_once()
            self._stop.wait(0.3)

    def __enter__(self) -> "OnlineConsumer":
        self._heartbeat()
        with RocketMQAdmin.from_cluster(self.cluster) as admin:
            wait_for(lambda: any(c.client_id == self.client_id for c in admin.consumer_clients(self.group)),
                     what=f"{self.client_id} online in {self.group}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and close its connections: the broker drops the client at once (its channel closed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for connection in self._beats.values():
            connection.close()
        self._beats.clear()
        self._admin.close()

    def __exit__(self, *exc: object) -> None:
        self.stop()
