"""A small Kafka setting many tests need: a one-partition topic of two records and consumer groups
committed at its end (so kafka-replay to_earliest plans a real change of 2 messages)."""
from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.integrations.kafka import KafkaClient


def topic_of_two(config: dict, topic: str) -> str:
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, 1)
    producer = Producer(config)
    producer.produce(topic, b"x")
    producer.produce(topic, b"y")
    producer.flush()
    return topic


def commit_at_end(config: dict, topic: str, group: str) -> str:
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    consumer.close()
    return group


def group_at_end(clusters, unique, prefix: str) -> tuple[dict, str, str]:
    """(kafka config of primary, topic, group): a topic of two records, the group committed at its end."""
    config = clusters.kafka_cluster("primary").client_config()
    topic = topic_of_two(config, unique(prefix))
    return config, topic, commit_at_end(config, topic, unique(f"{prefix}group"))
