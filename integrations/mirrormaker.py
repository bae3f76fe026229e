"""MirrorMaker 2's state, read from the topics it writes: checkpoints, offset syncs and heartbeats,
and the replication lag of mirrored topics. No Prefect here.

    mirror = MirrorState(standby.client_config(), source_alias="primary", timeout_s=10)
    checkpoints = mirror.checkpoints(groups={"billing"})   # {(group, "primary.orders", 0): Checkpoint}
    heartbeat = mirror.last_heartbeat()                     # Heartbeat(source, target, timestamp_ms) | None
    syncs = read_offset_syncs(primary.client_config(), "standby")   # {("orders", 0): [OffsetSync, ...]}
    lag = replication_lag(primary_kafka, standby_kafka, "primary", ["orders"], syncs)

Record formats (mirror-client Checkpoint.java, OffsetSync.java, Heartbeat.java; big-endian;
STRING = INT16 length + UTF-8):
    checkpoint  key STRING group, STRING topic (downstream name), INT32 partition
                value INT16 version, INT64 upstream offset, INT64 downstream offset, STRING metadata
    offset sync key STRING topic (upstream name), INT32 partition; value INT64 upstream, INT64 downstream
    heartbeat   key STRING source alias, STRING target alias; value INT16 version, INT64 timestamp ms
A topic is read to the end offsets it had when the read began; the last record per key wins, as
RemoteClusterUtils.translateOffsets does.
"""
from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from mq_runbooks.base.errors import BrokerError, UnreachableError
from mq_runbooks.integrations.kafka import KafkaClient, TopicPartitionKey

__all__ = [
    "Checkpoint", "Heartbeat", "MirrorState", "OffsetSync", "ReplicationLag", "decode_checkpoint",
    "decode_heartbeat", "decode_offset_sync", "read_offset_syncs", "remote_topic", "replication_lag",
    "upstream_topic",
]

_log = logging.getLogger(__name__)
_READER_GROUP = "mq-runbooks.mirror-reader"  # assign only, never commits: the broker never sees it
T = TypeVar("T")


def remote_topic(source_alias: str, topic: str) -> str:
    """The name MM2's DefaultReplicationPolicy gives `topic` on the target: 'primary.orders'."""
    return f"{source_alias}.{topic}"


def upstream_topic(source_alias: str, remote: str) -> str | None:
    """'primary.orders' -> 'orders'; None for a topic that is not a replica from `source_alias`."""
    prefix = f"{source_alias}."
    return remote[len(prefix):] if remote.startswith(prefix) else None


@dataclass(frozen=True)
class Checkpoint:
    group: str
    topic: str  # the downstream (remote) topic, e.g. primary.orders
    partition: int
    upstream_offset: int
    downstream_offset: int
    metadata: str
    timestamp_ms: int  # when MM2 wrote it

    def age_s(self, now_ms: int | None = None) -> float:
        return _age_s(self.timestamp_ms, now_ms)


@dataclass(frozen=True)
class OffsetSync:
    topic: str  # upstream name
    partition: int
    upstream_offset: int
    downstream_offset: int


@dataclass(frozen=True)
class Heartbeat:
    source_alias: str
    target_alias: str
    timestamp_ms: int

    def age_s(self, now_ms: int | None = None) -> float:
        return _age_s(self.timestamp_ms, now_ms)


@dataclass(frozen=True)
class ReplicationLag:
    topic: str  # upstream name
    partition: int
    upstream_end: int
    downstream_end: int
    replicated_upto: int  # the upstream offset just after the last record that reached the target
    exact: bool  # False: no offset sync was readable, records assumed 1:1 from offset 0

    @property
    def messages_at_risk(self) -> int:
        """Records on the source that have not reached the target."""
        return max(0, self.upstream_end - self.replicated_upto)


def _age_s(timestamp_ms: int, now_ms: int | None) -> float:
    return ((now_ms if now_ms is not None else int(time.time() * 1000)) - timestamp_ms) / 1000


class _Reader:
    """Walks a byte string of MM2's schema types."""

    def __init__(self, data: bytes | None, what: str):
        if data is None:
            raise ValueError(f"{what}: no bytes")
        self.data, self.position, self.what = data, 0, what

    def _take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.position + size > len(self.data):
            raise ValueError(f"{self.what}: truncated at byte {self.position} of {len(self.data)}")
        (value,) = struct.unpack_from(fmt, self.data, self.position)
        self.position += size
        return value

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def int64(self) -> int:
        return self._take(">q")

    def string(self) -> str:
        length = self.int16()
        if length < 0 or self.position + length > len(self.data):
            raise ValueError(f"{self.what}: string of {length} bytes at byte {self.position} does not fit")
        text = self.data[self.position:self.position + length].decode()
        self.position += length
        return text


def decode_checkpoint(key: bytes | None, value: bytes | None, timestamp_ms: int = 0) -> Checkpoint:
    """One record of `<alias>.checkpoints.internal`; ValueError when it is not in the format."""
    k, v = _Reader(key, "checkpoint key"), _Reader(value, "checkpoint value")
    group, topic, partition = k.string(), k.string(), k.int32()
    version = v.int16()
    if version != 0:
        raise ValueError(f"checkpoint value: unknown version {version}")
    upstream, downstream = v.int64(), v.int64()
    return Checkpoint(group, topic, partition, upstream, downstream, v.string(), timestamp_ms)


def decode_offset_sync(key: bytes | None, value: bytes | None) -> OffsetSync:
    """One record of `mm2-offset-syncs.<target>.internal`; ValueError when it is not in the format."""
    k, v = _Reader(key, "offset sync key"), _Reader(value, "offset sync value")
    topic, partition = k.string(), k.int32()
    return OffsetSync(topic, partition, v.int64(), v.int64())


def decode_heartbeat(key: bytes | None, value: bytes | None) -> Heartbeat:
    """One record of `heartbeats`; ValueError when it is not in the format."""
    k, v = _Reader(key, "heartbeat key"), _Reader(value, "heartbeat value")
    source, target = k.string(), k.string()
    v.int16()
    return Heartbeat(source, target, v.int64())


def _read_to_end(config: Mapping[str, str], name: str, topic: str, timeout_s: float,
                 decode: Callable[[bytes | None, bytes | None, int], T | None],
                 from_end: int | None = None) -> list[T]:
    """Every record of `topic` (or the last `from_end` of each partition) up to the end offsets it
    had when the read began, decoded; records `decode` returns None for are skipped."""
    consumer = Consumer({**config, "group.id": _READER_GROUP, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "logger": _log})
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout_s)
        except KafkaException as exc:
            raise UnreachableError(f"kafka cluster {name!r}: no answer about {topic}: {exc.args[0].str()}") from None
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            if described is not None and described.error.code() not in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                raise BrokerError(f"kafka cluster {name!r}: {topic}: {described.error.str()}")
            return []
        pending: dict[int, int] = {}
        assignment = []
        for partition in sorted(described.partitions):
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            except KafkaException as exc:
                raise UnreachableError(f"kafka cluster {name!r}: no end offset of {topic}:{partition}: "
                                       f"{exc.args[0].str()}") from None
            start = low if from_end is None else max(low, high - from_end)
            if high > start:
                pending[partition] = high
                assignment.append(TopicPartition(topic, partition, start))
        consumer.assign(assignment)
        records: list[T] = []
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise UnreachableError(f"kafka cluster {name!r}: reading {topic} to its end took longer "
                                       f"than {timeout_s:g}s")
            for message in consumer.consume(5000, 0.05):
                if message.error() is not None:
                    raise BrokerError(f"kafka cluster {name!r}: reading {topic}: {message.error().str()}")
                try:
                    decoded = decode(message.key(), message.value(), message.timestamp()[1])
                except ValueError as exc:
                    _log.warning("skipping %s:%s@%s: %s", topic, message.partition(), message.offset(), exc)
                    decoded = None
                if decoded is not None:
                    records.append(decoded)
                if message.offset() + 1 >= pending.get(message.partition(), 0):
                    pending.pop(message.partition(), None)
        return records
    finally:
        consumer.close()


class MirrorState:
    """What MM2 wrote on its target cluster (the standby) about one source alias."""

    def __init__(self, config: Mapping[str, str], *, source_alias: str, name: str = "standby",
                 timeout_s: float = 10.0):
        self.config, self.source_alias, self.name, self.timeout_s = dict(config), source_alias, name, timeout_s

    @property
    def checkpoints_topic(self) -> str:
        return f"{self.source_alias}.checkpoints.internal"

    def checkpoints(self, groups: Iterable[str] | None = None) -> dict[tuple[str, str, int], Checkpoint]:
        """The latest checkpoint per (group, downstream topic, partition), of `groups` or of all."""
        wanted = None if groups is None else set(groups)

        def decode(key: bytes | None, value: bytes | None, timestamp_ms: int) -> Checkpoint | None:
            checkpoint = decode_checkpoint(key, value, timestamp_ms)
            return checkpoint if wanted is None or checkpoint.group in wanted else None

        latest: dict[tuple[str, str, int], Checkpoint] = {}
        for checkpoint in _read_to_end(self.config, self.name, self.checkpoints_topic, self.timeout_s, decode):
            latest[(checkpoint.group, checkpoint.topic, checkpoint.partition)] = checkpoint
        return latest

    def last_heartbeat(self) -> Heartbeat | None:
        """The newest heartbeat MM2 wrote for `source_alias` (it shows MM2 is running, not that data
        flows: heartbeats are written even while the source is down); None when there is none."""
        def decode(key: bytes | None, value: bytes | None, timestamp_ms: int) -> Heartbeat | None:
            beat = decode_heartbeat(key, value)
            return beat if beat.source_alias == self.source_alias else None

        beats = _read_to_end(self.config, self.name, "heartbeats", self.timeout_s, decode, from_end=20)
        return max(beats, key=lambda beat: beat.timestamp_ms, default=None)


def read_offset_syncs(source_config: Mapping[str, str], target_alias: str, *, name: str = "primary",
                      timeout_s: float = 10.0, topics: Iterable[str] | None = None
                      ) -> dict[TopicPartitionKey, list[OffsetSync]]:
    """MM2's offset syncs (kept on the source cluster) per upstream partition, oldest first."""
    wanted = None if topics is None else set(topics)

    def decode(key: bytes | None, value: bytes | None, timestamp_ms: int) -> OffsetSync | None:
        sync = decode_offset_sync(key, value)
        return sync if wanted is None or sync.topic in wanted else None

    syncs: dict[TopicPartitionKey, list[OffsetSync]] = {}
    for sync in _read_to_end(source_config, name, f"mm2-offset-syncs.{target_alias}.internal", timeout_s, decode):
        syncs.setdefault((sync.topic, sync.partition), []).append(sync)
    return syncs


def upstream_of(downstream_offset: int, syncs: list[OffsetSync]) -> int | None:
    """The upstream offset of the record at `downstream_offset`, counted on from the newest sync at or
    before it (records after a sync are copied one for one); None when no sync is at or before it."""
    before = [s for s in syncs if s.downstream_offset <= downstream_offset]
    if not before:
        return None
    sync = max(before, key=lambda s: s.downstream_offset)
    return sync.upstream_offset + (downstream_offset - sync.downstream_offset)


def replication_lag(source: KafkaClient, target: KafkaClient, source_alias: str,
                    partitions: Iterable[TopicPartitionKey],
                    syncs: Mapping[TopicPartitionKey, list[OffsetSync]]) -> list[ReplicationLag]:
    """Per upstream partition: its end offset on the source, the end of its replica on the target,
    and how far into the source the replica reaches (exact through the offset syncs)."""
    keys = sorted(set(partitions))
    upstream = source.log_offsets(keys)
    # A replica MM2 has not created yet holds nothing: every record of it is at risk.
    present = target.list_topics()
    downstream = target.log_offsets([(remote_topic(source_alias, t), p) for t, p in keys
                                     if remote_topic(source_alias, t) in present])
    lags = []
    for topic, partition in keys:
        replica = downstream.get((remote_topic(source_alias, topic), partition))
        down_end = replica.log_end_offset if replica is not None else 0
        reached = upstream_of(down_end, syncs.get((topic, partition), []))
        lags.append(ReplicationLag(topic, partition, upstream[(topic, partition)].log_end_offset, down_end,
                                   down_end if reached is None else reached, exact=reached is not None))
    return lags
