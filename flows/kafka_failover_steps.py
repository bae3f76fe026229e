"""Steps kafka-failover and kafka-failback share (plain functions; the flows wrap them as tasks):
commit a group's offsets on a cluster with a snapshot to restore, prove the group can consume
from them, and prove that the switched endpoint reaches the intended cluster with a canary.

    snapshot = snapshot_offsets(cluster, group, partitions)         # {(topic, p): offset} before
    alter(cluster, group, targets)            # (mq_runbooks.flows.kafka_replay) BrokerError naming failures
    read_from_committed(cluster, group, targets)                   # {"topic:p": first offset read}
    canary_through(endpoint, cluster, run_id)                      # {"endpoint", "cluster_id", ...}
"""
from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from mq_runbooks.base.clusters import KafkaCluster
from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.flows.kafka_failover_plan import kafka_client
from mq_runbooks.integrations.kafka import KafkaClient, TopicPartitionKey

CANARY_TOPIC = "mq-runbooks.canary"


def snapshot_offsets(cluster: KafkaCluster, group: str, partitions: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
    """The group's committed offsets on `partitions` before the change (absent: none committed)."""
    with kafka_client(cluster) as kafka:
        committed = kafka.committed_offsets(group)
    return {key: committed[key] for key in partitions if key in committed}


def snapshot_csv(group: str, offsets: dict[TopicPartitionKey, int]) -> str:
    return "".join(f"{group},{t},{p},{o}\n" for (t, p), o in sorted(offsets.items()))


def read_from_committed(cluster: KafkaCluster, group: str, targets: dict[TopicPartitionKey, int],
                        timeout_s: float = 15.0) -> dict[str, int | None]:
    """Consume one record per partition as `group` would on restart (from its committed offsets,
    assigned without joining, never committing); BrokerError unless each partition that has records
    at or after its target yields exactly the target first. Per partition: the offset read (None
    where the target is the log end)."""
    with kafka_client(cluster) as kafka:
        ends = kafka.log_offsets(list(targets))
    expect = {key: offset for key, offset in targets.items() if offset < ends[key].log_end_offset}
    seen: dict[TopicPartitionKey, int] = {}
    if expect:
        consumer = Consumer({**cluster.client_config(), "group.id": group, "enable.auto.commit": False,
                             "auto.offset.reset": "error"})
        try:
            consumer.assign([TopicPartition(t, p) for t, p in expect])  # no offset: the committed one
            deadline = time.monotonic() + timeout_s
            while len(seen) < len(expect) and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error() is not None:
                    raise BrokerError(f"group {group} cannot consume on {cluster.name}: {message.error().str()}")
                key = (message.topic(), message.partition())
                if key not in seen:
                    seen[key] = message.offset()
                    consumer.pause([TopicPartition(*key)])
        finally:
            consumer.close()
    wrong = [f"{t}:{p} started at {seen.get((t, p), 'nothing')}, expected {o}"
             for (t, p), o in sorted(expect.items()) if seen.get((t, p)) != o]
    if wrong:
        raise BrokerError(f"group {group} on {cluster.name} does not resume where planned: {'; '.join(wrong[:10])}")
    return {f"{t}:{p}": seen.get((t, p)) for t, p in sorted(targets)}


def canary_through(endpoint: str, cluster: KafkaCluster, run_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    """Produce one record through `endpoint` (bootstrap servers, with `cluster`'s security settings)
    and consume it back; BrokerError unless it comes back and the endpoint is `cluster` itself."""
    config = {**cluster.client_config(), "bootstrap.servers": endpoint}
    with kafka_client(cluster) as expected, KafkaClient(config, name=f"endpoint {endpoint}", timeout_s=timeout_s) as via:
        want, reached = expected.describe_cluster().cluster_id, via.describe_cluster().cluster_id
        if reached != want:
            raise BrokerError(f"the switch points at {endpoint!r}, which is cluster {reached}, not {cluster.name} ({want})")
        if CANARY_TOPIC not in via.list_topics():
            try:
                via.create_topic(CANARY_TOPIC, 1)
            except BrokerError as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    marker = f"canary-{run_id}-{uuid.uuid4().hex[:6]}".encode()
    delivered: list[Any] = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": int(timeout_s * 1000)})
    producer.produce(CANARY_TOPIC, value=marker, partition=0, on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(timeout_s)
    if not delivered or delivered[0][0] is not None:
        raise BrokerError(f"the canary produced through {endpoint!r} was not confirmed: "
                          f"{delivered[0][0] if delivered else 'no answer'}")
    offset = delivered[0][1].offset()
    consumer = Consumer({**config, "group.id": "mq-runbooks.canary", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(CANARY_TOPIC, 0, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and message.value() == marker:
                return {"endpoint": endpoint, "cluster_id": reached, "topic": CANARY_TOPIC, "offset": offset}
    except KafkaException as exc:
        raise BrokerError(f"the canary could not be consumed through {endpoint!r}: {exc}") from None
    finally:
        consumer.close()
    raise UnreachableError(f"the canary produced through {endpoint!r} did not come back within {timeout_s:g}s")
