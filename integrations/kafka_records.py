"""Single records of a Kafka partition: read the record at an offset, and copy it to a dead-letter
topic exactly once, with headers naming where it came from.

    records = KafkaRecords(cluster.client_config(), name="primary", timeout_s=10)
    record = records.read_record("orders", 0, 41)                  # KafkaRecord(offset=41, key=..., ...)
    origin = Provenance("orders", 0, 41, group="billing")
    with KafkaClient(...) as kafka:
        copy = records.copy_to_dead_letter(kafka, record, "orders.dlt", origin)
    copy.offset, copy.already_present                               # (7, False); a second call: (7, True)

Reads use a plain Consumer with assign/seek (it never subscribes and never commits, so it joins no
group); every call is bounded by `timeout_s`. Nothing here imports Prefect.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.integrations.kafka import KafkaClient, UnknownTopicError

__all__ = ["DeadLetterCopy", "KafkaRecord", "KafkaRecords", "Provenance", "dead_letter_partition"]

_log = logging.getLogger("mq_runbooks.integrations.kafka.librdkafka")  # quiet: see integrations/kafka.py
# A reader needs a group.id to exist, but it only assigns partitions and never commits, so the
# broker never sees this group.
_READER_GROUP = "mq-runbooks.record-reader"
HEADER_PREFIX = "dlt.original."
_TIMESTAMP_TYPES = {0: "none", 1: "create-time", 2: "log-append-time"}


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int | None
    timestamp_type: str  # "create-time", "log-append-time" or "none"

    @property
    def key_bytes(self) -> int:
        return len(self.key or b"")

    @property
    def value_bytes(self) -> int:
        return len(self.value or b"")

    @property
    def timestamp(self) -> dt.datetime | None:
        if self.timestamp_ms is None:
            return None
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.timezone.utc)


@dataclass(frozen=True)
class Provenance:
    """Where a dead-lettered record came from; written as `dlt.original.*` headers on the copy."""

    topic: str
    partition: int
    offset: int
    group: str

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {"topic": self.topic, "partition": str(self.partition), "offset": str(self.offset),
                  "group": self.group}
        return [(HEADER_PREFIX + name, value.encode()) for name, value in fields.items()]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes | None]] | None) -> Provenance | None:
        """The provenance a copy carries, or None when it carries none (or an incomplete one)."""
        found = {name[len(HEADER_PREFIX):]: (value or b"").decode(errors="replace")
                 for name, value in headers or [] if name.startswith(HEADER_PREFIX)}
        try:
            return cls(found["topic"], int(found["partition"]), int(found["offset"]), found["group"])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class DeadLetterCopy:
    topic: str
    partition: int
    offset: int
    already_present: bool  # True: an earlier run had copied it, nothing was produced now


def dead_letter_partition(source_partition: int, dead_letter_partitions: int) -> int:
    """The dead-letter partition a record of `source_partition` goes to. Fixed, so that looking for an
    earlier copy reads one partition, not the whole topic."""
    return source_partition % dead_letter_partitions


class KafkaRecords:
    """Reads and copies single records of one cluster; each call opens and closes its own clients."""

    def __init__(self, config: Mapping[str, str], *, name: str = "kafka", timeout_s: float = 10.0):
        self.name = name
        self.timeout_s = timeout_s
        self._config = dict(config)

    def read_record(self, topic: str, partition: int, offset: int) -> KafkaRecord:
        """The record at `offset`, or the first one after it when `offset` holds none a consumer sees
        (a transaction marker, a compacted record). BrokerError when the partition has no record at or
        after `offset`, or when `offset` is before the log start (deleted); UnreachableError when
        nothing answers within `timeout_s`."""
        consumer = self._consumer()
        try:
            self._require_partition(consumer, topic, partition)
            consumer.assign([TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                message = consumer.poll(min(0.5, max(0.0, deadline - time.monotonic())))
                if message is None:
                    continue
                if message.error() is not None:
                    self._raise_read_error(message, f"{topic}:{partition} at offset {offset}")
                return _record(message)
        finally:
            consumer.close()
        raise UnreachableError(f"kafka cluster {self.name!r}: no record of {topic}:{partition} at offset "
                               f"{offset} arrived within {self.timeout_s:g}s")

    def find_copies(self, topic: str, partition: int, origin: Provenance) -> list[int]:
        """Offsets, in `topic`:`partition`, of every record whose provenance headers equal `origin`.
        Reads the partition from its start to its end (bounded by `timeout_s`)."""
        consumer = self._consumer()
        found: list[int] = []
        try:
            self._require_partition(consumer, topic, partition)
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.timeout_s)
            if low >= high:
                return found
            consumer.assign([TopicPartition(topic, partition, low)])
            deadline = time.monotonic() + self.timeout_s
            while True:
                if time.monotonic() >= deadline:
                    raise UnreachableError(f"kafka cluster {self.name!r}: reading {topic}:{partition} to its end "
                                           f"took longer than {self.timeout_s:g}s")
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        return found
                    self._raise_read_error(message, f"{topic}:{partition}")
                if Provenance.from_headers(message.headers()) == origin:
                    found.append(message.offset())
                if message.offset() >= high - 1:
                    return found
        finally:
            consumer.close()

    def produce_copy(self, record: KafkaRecord, topic: str, partition: int, origin: Provenance) -> int:
        """Produce a copy of `record` (key, value, its headers plus the provenance headers) to
        `topic`:`partition` with an idempotent producer; returns its offset once the broker confirmed
        it (acks=all). The copy is stamped now, so the dead-letter topic's retention counts from now."""
        delivered: list[Message] = []
        producer = Producer({**self._config, "enable.idempotence": True, "acks": "all", "linger.ms": 0,
                             "message.timeout.ms": int(self.timeout_s * 1000), "logger": _log})
        headers = [header for header in record.headers if not header[0].startswith(HEADER_PREFIX)]
        producer.produce(topic, key=record.key, value=record.value, partition=partition,
                         headers=headers + origin.headers(),
                         on_delivery=lambda error, message: delivered.append(message))
        remaining = producer.flush(self.timeout_s + 1)
        if remaining or not delivered:
            raise UnreachableError(f"kafka cluster {self.name!r}: the copy to {topic}:{partition} was not "
                                   f"confirmed within {self.timeout_s:g}s")
        message = delivered[0]
        if message.error() is not None:
            raise BrokerError(f"kafka cluster {self.name!r}: producing the copy to {topic}:{partition} failed: "
                              f"{message.error().name()}: {message.error().str()}")
        return message.offset()

    def copy_to_dead_letter(self, kafka: KafkaClient, record: KafkaRecord, topic: str,
                            origin: Provenance) -> DeadLetterCopy:
        """Copy `record` to the dead-letter `topic` exactly once: create the topic if it is missing
        (as many partitions as the source topic), and produce only when no copy with the same
        provenance is there yet (so a retried run does not duplicate it)."""
        partitions = ensure_topic(kafka, topic, len(kafka.partitions(record.topic)))
        partition = dead_letter_partition(record.partition, partitions)
        earlier = self.find_copies(topic, partition, origin)
        if earlier:
            return DeadLetterCopy(topic, partition, earlier[0], already_present=True)
        return DeadLetterCopy(topic, partition, self.produce_copy(record, topic, partition, origin), False)

    def _consumer(self) -> Consumer:
        return Consumer({
            **self._config, "group.id": _READER_GROUP, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "enable.partition.eof": True,
            # "error": an offset outside the log is reported, never silently replaced by another one.
            "auto.offset.reset": "error", "isolation.level": "read_committed", "logger": _log,
            "session.timeout.ms": 6000, "socket.timeout.ms": max(1000, int(self.timeout_s * 1000)),
        })

    def _require_partition(self, consumer: Consumer, topic: str, partition: int) -> None:
        """UnknownTopicError unless the cluster has `topic`:`partition` (a consumer would just wait)."""
        try:
            metadata = consumer.list_topics(topic, timeout=self.timeout_s)
        except KafkaException as exc:
            raise UnreachableError(f"kafka cluster {self.name!r}: no metadata for topic {topic!r}: {exc}") from None
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or partition not in described.partitions:
            raise UnknownTopicError(f"kafka cluster {self.name!r} has no partition {topic}:{partition}",
                                    [(topic, partition)])

    def _raise_read_error(self, message: Message, where: str) -> None:
        error = message.error()
        if error.code() == KafkaError._PARTITION_EOF:
            raise BrokerError(f"kafka cluster {self.name!r}: {where}: there is no record at or after this offset "
                              f"(the log ends at {message.offset()})")
        if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
            raise BrokerError(f"kafka cluster {self.name!r}: {where}: the offset is outside the log "
                              f"(deleted by retention?): {error.str()}")
        if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
                            KafkaError._UNKNOWN_TOPIC):
            raise UnknownTopicError(f"kafka cluster {self.name!r}: {where}: no such partition", [])
        raise BrokerError(f"kafka cluster {self.name!r}: reading {where} failed: {error.name()}: {error.str()}")


def ensure_topic(kafka: KafkaClient, topic: str, partitions: int) -> int:
    """The partition count of `topic`, created with `partitions` partitions if it does not exist."""
    try:
        return len(kafka.partitions(topic))
    except UnknownTopicError:
        pass
    try:
        kafka.create_topic(topic, partitions)
    except BrokerError as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another run created it meanwhile: use it
            raise
    return len(kafka.partitions(topic))


def _record(message: Message) -> KafkaRecord:
    timestamp_type, timestamp_ms = message.timestamp()
    return KafkaRecord(
        topic=message.topic(), partition=message.partition(), offset=message.offset(), key=message.key(),
        value=message.value(), headers=tuple(message.headers() or ()),
        timestamp_ms=timestamp_ms if timestamp_type else None,
        timestamp_type=_TIMESTAMP_TYPES.get(timestamp_type, "none"),
    )
