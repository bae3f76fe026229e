"""MirrorMaker 2's records decoded byte for byte, and read from the real stack's MM2 (primary -> standby)."""
from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.integrations.mirrormaker import (
    MirrorState, OffsetSync, decode_checkpoint, decode_heartbeat, decode_offset_sync, read_offset_syncs,
    remote_topic, replication_lag, upstream_of, upstream_topic,
)


pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


def string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def test_checkpoint_decodes_the_mirror_client_format():
    key = string("billing") + string("primary.orders") + struct.pack(">i", 7)
    value = struct.pack(">hqq", 0, 1200, 1187) + string("meta")
    checkpoint = decode_checkpoint(key, value, 1700000000000)
    assert (checkpoint.group, checkpoint.topic, checkpoint.partition) == ("billing", "primary.orders", 7)
    assert (checkpoint.upstream_offset, checkpoint.downstream_offset, checkpoint.metadata) == (1200, 1187, "meta")
    assert checkpoint.age_s(now_ms=1700000002500) == 2.5
    with pytest.raises(ValueError, match="unknown version 1"):
        decode_checkpoint(key, struct.pack(">hqq", 1, 1, 1) + string(""))
    with pytest.raises(ValueError, match="truncated"):
        decode_checkpoint(key, value[:12])
    with pytest.raises(ValueError, match="does not fit"):
        decode_checkpoint(string("g")[:1] + b"\x09g", value)


def test_offset_sync_and_heartbeat_decode():
    sync = decode_offset_sync(string("orders") + struct.pack(">i", 2), struct.pack(">qq", 101, 99))
    assert sync == OffsetSync("orders", 2, 101, 99)
    beat = decode_heartbeat(string("primary") + string("standby"), struct.pack(">hq", 0, 1795759521654))
    assert (beat.source_alias, beat.target_alias, beat.timestamp_ms) == ("primary", "standby", 1795759521654)


def test_upstream_of_counts_on_from_the_newest_sync_before():
    syncs = [OffsetSync("t", 0, 10, 0), OffsetSync("t", 0, 111, 101)]
    assert upstream_of(0, syncs) == 10 and upstream_of(50, syncs) == 60 and upstream_of(120, syncs) == 130
    assert upstream_of(5, [OffsetSync("t", 0, 20, 10)]) is None
    assert remote_topic("primary", "orders") == "primary.orders"
    assert upstream_topic("primary", "primary.orders") == "orders" and upstream_topic("primary", "orders") is None


def wait_for(read, ready, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(1)


def test_checkpoints_heartbeats_and_lag_from_the_real_mirrormaker(clusters, unique):
    primary, standby = clusters.kafka_cluster("primary"), clusters.kafka_cluster("standby")
    topic, group = unique("mm2"), unique("mm2-group")
    with KafkaClient(primary.client_config()) as kafka:
        kafka.create_topic(topic, 2)
    producer = Producer(primary.client_config())
    for i in range(300):
        producer.produce(topic, value=b"%d" % i, partition=i % 2)
    producer.flush()
    consumer = Consumer({**primary.client_config(), "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 70), TopicPartition(topic, 1, 150)], asynchronous=False)
    consumer.close()

    mirror = MirrorState(standby.client_config(), source_alias="primary")
    replica = remote_topic("primary", topic)
    checkpoints = wait_for(lambda: mirror.checkpoints(groups=[group]),
                           lambda found: {c.upstream_offset for c in found.values()} == {70, 150})
    assert set(checkpoints) == {(group, replica, 0), (group, replica, 1)}
    for partition, upstream in ((0, 70), (1, 150)):
        checkpoint = checkpoints[(group, replica, partition)]
        assert checkpoint.upstream_offset == upstream
        assert 0 <= checkpoint.downstream_offset <= upstream, "conservative: never past the upstream position"
        assert 0 <= checkpoint.age_s() < 60
    assert mirror.checkpoints(groups=["no-such-group"]) == {}

    beat = mirror.last_heartbeat()
    assert beat is not None and beat.target_alias == "standby" and beat.age_s() < 15

    syncs = read_offset_syncs(primary.client_config(), "standby", topics=[topic])
    assert set(syncs) == {(topic, 0), (topic, 1)}
    with KafkaClient(primary.client_config()) as source, KafkaClient(standby.client_config()) as target:
        lags = wait_for(lambda: replication_lag(source, target, "primary", [(topic, 0), (topic, 1)], syncs),
                        lambda found: all(lag.downstream_end == 150 for lag in found))
        assert [(lag.upstream_end, lag.downstream_end, lag.messages_at_risk, lag.exact) for lag in lags] == \
            [(150, 150, 0, True), (150, 150, 0, True)]
        # A topic MM2 has not seen yet: all of it is at risk, and no sync makes it exact.
        fresh = unique("mm2-fresh")
        source.create_topic(fresh, 1)
        producer.produce(fresh, value=b"x")
        producer.flush()
        (lag,) = replication_lag(source, target, "primary", [(fresh, 0)], {})
        assert (lag.downstream_end, lag.messages_at_risk, lag.exact) == (0, 1, False)
