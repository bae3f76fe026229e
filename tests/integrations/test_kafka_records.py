"""integrations/kafka_records.py against the real primary Kafka: reading the record at an offset,
and copying it to a dead-letter topic exactly once with its provenance."""
from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.base.errors import BrokerError
from mq_runbooks.integrations.kafka import KafkaClient, UnknownTopicError
from mq_runbooks.integrations.kafka_records import KafkaRecords, Provenance


@pytest.fixture
def kafka_config(clusters):
    return clusters.kafka_cluster("primary").client_config()


@pytest.fixture
def topic_with_records(kafka_config, unique):
    """A 2-partition topic; partition 1 holds records 0..4 with keys, headers and values."""
    topic = unique("records")
    with KafkaClient(kafka_config) as kafka:
        kafka.create_topic(topic, 2)
    producer = Producer(kafka_config)
    for i in range(5):
        producer.produce(topic, key=b"k%d" % i, value=b"value-%d" % i, partition=1,
                         headers=[("trace", b"t%d" % i)], timestamp=1_700_000_000_000 + i)
    producer.flush()
    return topic


def read_all(config, topic, partition):
    consumer = Consumer({**config, "group.id": "test-reader", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, partition, -2)])
    messages = []
    while True:
        message = consumer.poll(5)
        assert message is not None, "no end of partition within 5 s"
        if message.error():
            break
        messages.append(message)
    consumer.close()
    return messages


def test_read_record_returns_the_record_at_the_offset(kafka_config, topic_with_records):
    record = KafkaRecords(kafka_config, timeout_s=5).read_record(topic_with_records, 1, 3)
    assert (record.offset, record.key, record.value) == (3, b"k3", b"value-3")
    assert record.headers == (("trace", b"t3"),)
    assert record.timestamp_ms == 1_700_000_000_003 and record.timestamp_type == "create-time"
    assert (record.key_bytes, record.value_bytes) == (2, 7)


def test_read_record_past_the_end_or_on_a_missing_partition_is_an_error(kafka_config, topic_with_records):
    records = KafkaRecords(kafka_config, timeout_s=5)
    with pytest.raises(BrokerError, match="no record at or after this offset"):
        records.read_record(topic_with_records, 1, 5)
    with pytest.raises(BrokerError, match="no record at or after this offset"):
        records.read_record(topic_with_records, 0, 0)  # an empty partition
    with pytest.raises(UnknownTopicError, match="no partition"):
        records.read_record(topic_with_records, 7, 0)


def test_copy_to_dead_letter_creates_the_topic_and_never_duplicates(kafka_config, topic_with_records):
    records = KafkaRecords(kafka_config, timeout_s=5)
    record = records.read_record(topic_with_records, 1, 2)
    origin = Provenance(topic_with_records, 1, 2, group="billing")
    dead_letter = f"{topic_with_records}.dlt"
    with KafkaClient(kafka_config) as kafka:
        first = records.copy_to_dead_letter(kafka, record, dead_letter, origin)
        again = records.copy_to_dead_letter(kafka, record, dead_letter, origin)  # a retried run
        assert kafka.partitions(dead_letter) == [0, 1], "created with the source topic's partition count"
        other_group = records.copy_to_dead_letter(kafka, record, dead_letter,
                                                  Provenance(topic_with_records, 1, 2, "audit"))
    assert (first.partition, first.offset, first.already_present) == (1, 0, False)
    assert (again.partition, again.offset, again.already_present) == (1, 0, True)
    assert (other_group.offset, other_group.already_present) == (1, False), "another group's copy is its own"

    copies = read_all(kafka_config, dead_letter, 1)
    assert [m.offset() for m in copies] == [0, 1]
    copy = copies[0]
    assert (copy.key(), copy.value()) == (b"k2", b"value-2")
    assert dict(copy.headers()) == {"trace": b"t2", "dlt.original.topic": topic_with_records.encode(),
                                    "dlt.original.partition": b"1", "dlt.original.offset": b"2",
                                    "dlt.original.group": b"billing"}
    assert Provenance.from_headers(copy.headers()) == origin
    assert records.find_copies(dead_letter, 1, origin) == [0]
    assert records.find_copies(dead_letter, 0, origin) == [], "an empty partition is read to its end"


def test_copy_of_a_record_from_a_missing_topic_is_refused(kafka_config, unique):
    records = KafkaRecords(kafka_config, timeout_s=5)
    with pytest.raises(UnknownTopicError):
        records.read_record(unique("nothing"), 0, 0)
