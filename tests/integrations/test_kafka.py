"""mq_runbooks.integrations.kafka against the real `primary` cluster of the local stack."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer

from mq_runbooks.base.errors import BrokerError, PreconditionError, UnreachableError
from mq_runbooks.integrations.kafka import Broker, ConsumerGroup, KafkaClient, PartitionLag, PartitionOffsets, UnknownTopicError


@pytest.fixture(scope="module")
def config(clusters) -> dict[str, str]:
    return clusters.kafka_cluster("primary").client_config()


@pytest.fixture(scope="module")
def kafka(config):
    with KafkaClient(config, name="primary", timeout_s=10) as client:
        yield client


def produce(config, topic: str, counts: list[int], timestamps: list[int] | None = None) -> None:
    """counts[p] records into partition p; record i gets timestamps[i] when given."""
    producer = Producer({**config, "linger.ms": 5})
    for partition, count in enumerate(counts):
        for i in range(count):
            producer.produce(topic, f"{partition}-{i}".encode(), partition=partition,
                             timestamp=timestamps[i] if timestamps else 0)
    assert producer.flush(10) == 0


def consume(config, group: str, topic: str, records: int, *, commit: bool, client_id: str = "test") -> Consumer:
    """A subscribed consumer that has read `records` records (and committed them if asked)."""
    consumer = Consumer({**config, "group.id": group, "client.id": client_id, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    read, deadline = 0, time.monotonic() + 20
    while (read < records or not consumer.assignment()) and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            read += 1
    assert read == records and consumer.assignment()
    if commit:
        consumer.commit(asynchronous=False)
    return consumer


def test_describe_cluster(kafka, clusters):
    cluster = kafka.describe_cluster()
    port = int(clusters.kafka_cluster("primary").bootstrap_servers.rsplit(":", 1)[1])
    assert cluster.cluster_id and Broker(1, "127.0.0.1", port) in cluster.brokers
    assert cluster.controller_id in {b.id for b in cluster.brokers}


def test_topic_partitions_and_log_offsets(kafka, config, unique):
    topic = unique("kafka-offsets")
    kafka.create_topic(topic, 3)
    produce(config, topic, [3, 5, 0])
    assert kafka.partitions(topic) == [0, 1, 2]
    assert kafka.list_topics()[topic] == 3
    assert not any(name.startswith("__") for name in kafka.list_topics())
    assert "__consumer_offsets" in kafka.list_topics(include_internal=True)
    keys = [(topic, 0), (topic, 1), (topic, 2)]
    assert kafka.log_offsets(keys) == {
        (topic, 0): PartitionOffsets(topic, 0, 0, 3), (topic, 1): PartitionOffsets(topic, 1, 0, 5),
        (topic, 2): PartitionOffsets(topic, 2, 0, 0),
    }
    assert kafka.delete_records_before({(topic, 1): 2, (topic, 0): 3}) == {(topic, 1): 2, (topic, 0): 3}
    assert kafka.log_offsets(keys)[(topic, 1)] == PartitionOffsets(topic, 1, 2, 5)
    assert kafka.log_offsets(keys)[(topic, 0)] == PartitionOffsets(topic, 0, 3, 3)


def test_unknown_topics_and_partitions_are_named(kafka, unique):
    topic = unique("kafka-known")
    kafka.create_topic(topic, 2)
    with pytest.raises(UnknownTopicError) as excinfo:
        kafka.partitions(topic + "x")
    assert str(excinfo.value).startswith(f"topic '{topic}x' does not exist on kafka cluster 'primary' "
                                         f"(did you mean '{topic}'")  # then other close names, at most 3
    with pytest.raises(UnknownTopicError) as excinfo:
        kafka.log_offsets([(topic, 0), (topic, 5)])
    assert f"has no partition {topic}:5" in str(excinfo.value) and excinfo.value.missing == [(topic, 5)]


def test_offsets_for_timestamp(kafka, config, unique):
    topic = unique("kafka-times")
    kafka.create_topic(topic, 2)
    base = int(time.time() * 1000) - 600_000
    produce(config, topic, [4, 2], timestamps=[base + i * 1000 for i in range(4)])
    keys = [(topic, 0), (topic, 1)]
    assert kafka.offsets_for_timestamp(keys, base + 500) == {(topic, 0): 1, (topic, 1): 1}
    assert kafka.offsets_for_timestamp(keys, base + 1500) == {(topic, 0): 2, (topic, 1): -1}
    assert kafka.offsets_for_timestamp(keys, base + 4000) == {(topic, 0): -1, (topic, 1): -1}
    assert kafka.offsets_for_timestamp(keys, 0) == {(topic, 0): 0, (topic, 1): 0}


def test_committed_offsets_and_lag_of_a_group_that_consumed(kafka, config, unique):
    topic, group = unique("kafka-lag"), unique("group")
    kafka.create_topic(topic, 1)
    produce(config, topic, [10])
    consume(config, group, topic, 10, commit=True).close()
    produce(config, topic, [4])
    assert kafka.committed_offsets(group) == {(topic, 0): 10}
    assert kafka.group_lag(group) == [PartitionLag(topic, 0, 10, 14, 4)]
    assert kafka.describe_group(group) == ConsumerGroup(group, "Empty", ())
    assert (group, "Empty") in kafka.list_groups()


def test_a_live_consumer_shows_as_stable_and_blocks_alter(kafka, config, unique):
    topic, group = unique("kafka-live"), unique("group")
    kafka.create_topic(topic, 2)
    produce(config, topic, [2, 1])
    consumer = consume(config, group, topic, 3, commit=False, client_id="billing-worker")
    try:
        described = kafka.describe_group(group)
        assert described.state == "Stable" and not described.is_inactive
        [member] = described.members
        assert member.client_id == "billing-worker" and "127.0.0.1" in member.host
        assert member.member_id.startswith("billing-worker") and member.group_instance_id is None
        assert member.assignment == ((topic, 0), (topic, 1))
        # Assigned but nothing committed: lag unknown, as --describe shows "-".
        assert kafka.group_lag(group) == [PartitionLag(topic, 0, None, 2, None), PartitionLag(topic, 1, None, 1, None)]
        with pytest.raises(PreconditionError) as excinfo:
            kafka.alter_group_offsets(group, {(topic, 0): 0})
        message = str(excinfo.value)
        assert f"consumer group '{group}'" in message and "is Stable with 1 member(s)" in message
        assert "billing-worker@" in message and "stop its consumers" in message
    finally:
        consumer.close()
    assert kafka.committed_offsets(group) == {}


def test_alter_group_offsets_on_an_empty_group(kafka, config, unique):
    topic, group = unique("kafka-alter"), unique("group")
    kafka.create_topic(topic, 3)
    produce(config, topic, [5, 5, 5])
    consume(config, group, topic, 15, commit=True).close()
    outcome = kafka.alter_group_offsets(group, {(topic, 0): 1, (topic, 2): 4})
    assert outcome == {(topic, 0): None, (topic, 2): None}
    assert kafka.committed_offsets(group) == {(topic, 0): 1, (topic, 1): 5, (topic, 2): 4}
    assert [lag.lag for lag in kafka.group_lag(group)] == [4, 0, 1]
    with pytest.raises(ValueError, match=f"offsets must be >= 0.*{topic}:1=-1"):
        kafka.alter_group_offsets(group, {(topic, 1): -1})


def test_an_unknown_group_reads_as_dead_and_empty(kafka, unique):
    group = unique("never-existed")
    assert kafka.describe_group(group) == ConsumerGroup(group, "Dead", ())
    assert kafka.committed_offsets(group) == {}
    assert kafka.group_lag(group) == []


@pytest.mark.parametrize("call", [
    lambda k: k.describe_cluster(), lambda k: k.list_groups(), lambda k: k.committed_offsets("g"),
    lambda k: k.log_offsets([("t", 0)]),
])
def test_an_unreachable_cluster_raises_within_the_timeout(call):
    with KafkaClient({"bootstrap.servers": "127.0.0.1:1"}, name="nowhere", timeout_s=2) as kafka:
        started = time.monotonic()
        with pytest.raises(UnreachableError) as excinfo:
            call(kafka)
        assert time.monotonic() - started < 4
    assert str(excinfo.value).startswith("kafka cluster 'nowhere' (127.0.0.1:1) did not answer within 2s: ")


def test_a_closed_client_says_so(config):
    kafka = KafkaClient(config, name="primary")
    kafka.close()
    with pytest.raises(RuntimeError, match="closed"):
        kafka.describe_cluster()


def test_from_cluster_builds_the_client_of_a_clusters_yaml_entry(clusters):
    primary = clusters.kafka_cluster("primary")
    with KafkaClient.from_cluster(primary) as kafka:
        assert (kafka.name, kafka.timeout_s) == ("primary", primary.request_timeout_s)
        assert kafka.describe_cluster().brokers, "it reaches the cluster clusters.yaml names"
    nowhere = primary.model_copy(update={"name": "nowhere", "bootstrap_servers": "127.0.0.1:1"})
    with KafkaClient.from_cluster(nowhere, timeout_s=2) as kafka:
        assert kafka.timeout_s == 2
        with pytest.raises(UnreachableError, match=r"^kafka cluster 'nowhere' \(127\.0\.0\.1:1\) did not answer within 2s"):
            kafka.describe_cluster()


def _config_once(kafka, topic, holds, timeout_s=30.0):
    """The topic's configuration once `holds(config)`: an alter reaches the brokers a moment after it
    returns (KRaft applies it from the metadata log), so a describe right after may still be the old one."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        config = kafka.describe_topic_config(topic)
        if holds(config) or time.monotonic() > deadline:
            return config
        time.sleep(0.2)


def test_topic_configuration_is_read_and_altered_key_by_key(kafka, unique):
    """Issue 27, item 2: describe a topic's configuration; an incremental alter changes only the keys
    named and returns what they were, so a restore sets back an override and deletes what was a default."""
    topic = unique("configs")
    kafka.create_topic(topic, 1)
    config = kafka.describe_topic_config(topic)
    assert config["retention.ms"].overridden is False and config["retention.bytes"].overridden is False
    default = config["retention.ms"].value

    before = kafka.alter_topic_config(topic, set={"retention.ms": "3600000", "segment.ms": "7200000"})
    assert {k: (c.value, c.overridden) for k, c in before.items()} == {
        "retention.ms": (default, False), "segment.ms": (config["segment.ms"].value, False)}
    now = _config_once(kafka, topic, lambda c: c["retention.ms"].value == "3600000" and c["segment.ms"].overridden)
    assert (now["retention.ms"].value, now["retention.ms"].overridden) == ("3600000", True)
    assert now["retention.bytes"].overridden is False, "keys not named are left alone"

    again = kafka.alter_topic_config(topic, set={"retention.ms": "7200000"}, delete=["segment.ms"])
    assert (again["retention.ms"].value, again["retention.ms"].overridden) == ("3600000", True)
    now = _config_once(kafka, topic, lambda c: c["retention.ms"].value == "7200000" and not c["segment.ms"].overridden)
    assert now["retention.ms"].value == "7200000" and now["segment.ms"].overridden is False

    restored = kafka.alter_topic_config(topic, delete=["retention.ms"])  # it was the default
    assert restored["retention.ms"].value == "7200000"
    now = _config_once(kafka, topic, lambda c: not c["retention.ms"].overridden)
    assert (now["retention.ms"].value, now["retention.ms"].overridden) == (default, False)

    with pytest.raises(BrokerError, match="has no configuration key retention.msx"):
        kafka.alter_topic_config(topic, set={"retention.msx": "1"})
    with pytest.raises(BrokerError, match="retention.ms"):
        kafka.alter_topic_config(topic, set={"retention.ms": "forever"})
    assert kafka.describe_topic_config(topic)["retention.ms"].overridden is False, "a refused alter changes nothing"
    with pytest.raises(UnknownTopicError, match="does not exist"):
        kafka.describe_topic_config(topic + "-nope")


def test_closing_waits_for_requests_still_in_flight():
    """A call that timed out leaves librdkafka's futures running: close() waits for them instead of
    dropping the handle under them (KafkaError _DESTROY "Handle is terminating")."""
    kafka = KafkaClient({"bootstrap.servers": "127.0.0.1:1"}, name="nowhere", timeout_s=1)
    with pytest.raises(UnreachableError):
        kafka.list_groups()
    in_flight = list(kafka._in_flight)
    kafka.close()
    assert kafka.closed and all(future.done() for future in in_flight)
    kafka.close()  # idempotent
