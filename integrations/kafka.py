"""A small synchronous facade over confluent-kafka's AdminClient, in an operator's words.

    with KafkaClient.from_cluster(clusters.kafka_cluster("primary")) as kafka:
        group = kafka.describe_group("billing")          # ConsumerGroup(state="Empty", members=())
        lag = kafka.group_lag("billing")                 # [PartitionLag(...), ...]

Partitions are `(topic, partition)` tuples. Every call is bounded: a cluster that does not answer
raises UnreachableError within about `timeout_s`; a broker that refuses raises BrokerError; a topic
or partition that does not exist raises UnknownTopicError. Nothing here imports Prefect.
"""
from __future__ import annotations

import concurrent.futures
import difflib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
    OffsetSpec,
)

from mq_runbooks.base.errors import BrokerError, PreconditionError, UnreachableError

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import KafkaCluster

__all__ = [
    "Broker", "ClusterDescription", "ConsumerGroup", "GroupMember", "KafkaClient", "PartitionLag",
    "PartitionOffsets", "TopicConfig", "TopicPartitionKey", "UnknownTopicError",
]

TopicPartitionKey = tuple[str, int]

_log = logging.getLogger(__name__)
# librdkafka's own lines (every refused connection, repeated) stay out of the operator's terminal:
# the errors they lead to are raised with the reason. Attach a handler here to see them.
_librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")
_librdkafka_log.propagate = False
_librdkafka_log.addHandler(logging.NullHandler())
# librdkafka's own timeouts are set to timeout_s; this is how much longer we wait for its answer.
_GRACE_S = 1.0
_UNREACHABLE_CODES = {
    KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
}
_UNKNOWN_TOPIC_CODES = {
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.UNKNOWN_TOPIC_ID, KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
}
# Partition errors that pass once metadata catches up (a new topic, a leader election).
_RETRIABLE_CODES = {
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH, KafkaError.OFFSET_NOT_AVAILABLE, KafkaError.REPLICA_NOT_AVAILABLE,
}
# The names kafka-consumer-groups.sh prints (org.apache.kafka.common.GroupState).
_STATE_NAMES = {
    ConsumerGroupState.UNKNOWN: "Unknown",
    ConsumerGroupState.PREPARING_REBALANCING: "PreparingRebalance",
    ConsumerGroupState.COMPLETING_REBALANCING: "CompletingRebalance",
    ConsumerGroupState.STABLE: "Stable",
    ConsumerGroupState.DEAD: "Dead",
    ConsumerGroupState.EMPTY: "Empty",
}


class UnknownTopicError(BrokerError, LookupError):
    """A topic or partition that the cluster does not have. `missing` lists what was asked for."""

    def __init__(self, message: str, missing: list[TopicPartitionKey] | list[str]):
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Broker:
    id: int
    host: str
    port: int


@dataclass(frozen=True)
class ClusterDescription:
    cluster_id: str
    controller_id: int | None
    brokers: tuple[Broker, ...]


@dataclass(frozen=True)
class PartitionOffsets:
    topic: str
    partition: int
    log_start_offset: int
    log_end_offset: int


@dataclass(frozen=True)
class GroupMember:
    member_id: str
    client_id: str
    host: str
    group_instance_id: str | None
    assignment: tuple[TopicPartitionKey, ...]


@dataclass(frozen=True)
class ConsumerGroup:
    group_id: str
    state: str  # "Empty", "Stable", "Dead", "PreparingRebalance", "CompletingRebalance", "Unknown"
    members: tuple[GroupMember, ...]

    @property
    def is_inactive(self) -> bool:
        """True when offsets may be altered: the group is Empty or Dead (has no members)."""
        return self.state in {"Empty", "Dead"} and not self.members


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed_offset: int | None
    log_end_offset: int
    lag: int | None


@dataclass(frozen=True)
class TopicConfig:
    """One configuration key of a topic as kafka-configs.sh --describe --all shows it.

    `overridden` is True when the topic sets the key itself (a dynamic topic config); False when
    the value is the broker's or Kafka's default, which `alter_topic_config(delete=[name])` returns to."""

    name: str
    value: str | None  # None for a sensitive key
    overridden: bool
    read_only: bool = False
    sensitive: bool = False


class KafkaClient:
    """One cluster's admin operations. Use as a context manager, or call `close()`: closing waits
    (up to `timeout_s`) for any request still in flight, so librdkafka never tears down a handle
    whose futures are pending (`KafkaError _DESTROY "Handle is terminating"`)."""

    def __init__(self, config: Mapping[str, str], *, name: str = "kafka", timeout_s: float = 10.0):
        self.name = name
        self.timeout_s = timeout_s
        self._bootstrap = config.get("bootstrap.servers", "?")
        # A logger keeps librdkafka's connection errors out of stderr; we report them ourselves.
        self._admin: AdminClient | None = AdminClient({**config, "logger": _librdkafka_log})
        self._in_flight: list[concurrent.futures.Future] = []  # futures a failed wait left behind

    @classmethod
    def from_cluster(cls, cluster: KafkaCluster, timeout_s: float | None = None) -> KafkaClient:
        """The client for a cluster of clusters.yaml: its connection settings (SASL/TLS included) and
        its request timeout, or `timeout_s` where a caller needs a shorter one (a probe)."""
        return cls(cluster.client_config(), name=cluster.name, timeout_s=timeout_s or cluster.request_timeout_s)

    def __enter__(self) -> KafkaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the client (idempotent). AdminClient has no close(): dropping the last reference
        frees it, so first wait for the requests still in flight (a call that timed out leaves some)."""
        if self._admin is None:
            return
        pending = [future for future in self._in_flight if not future.done()]
        if pending:
            concurrent.futures.wait(pending, timeout=self.timeout_s + _GRACE_S)
        self._in_flight.clear()
        self._admin.poll(0)
        self._admin = None

    @property
    def closed(self) -> bool:
        """True once `close()` ran (every call then raises RuntimeError)."""
        return self._admin is None

    def __repr__(self) -> str:
        return f"KafkaClient(name={self.name!r}, bootstrap={self._bootstrap!r})"

    # -- reads ------------------------------------------------------------------------------

    def describe_cluster(self) -> ClusterDescription:
        """The cluster id, the active controller and the brokers (sorted by id)."""
        result = self._wait_one(self._client.describe_cluster(request_timeout=self.timeout_s), "describe cluster")
        brokers = tuple(sorted((Broker(n.id, n.host, n.port) for n in result.nodes), key=lambda b: b.id))
        controller = result.controller.id if result.controller is not None else None
        return ClusterDescription(result.cluster_id, controller, brokers)

    def list_topics(self, include_internal: bool = False) -> dict[str, int]:
        """Topic name -> partition count, sorted by name; `__`-prefixed internal topics only if asked."""
        try:
            metadata = self._client.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise self._translate(exc, "list topics") from None
        return {
            name: len(topic.partitions)
            for name, topic in sorted(metadata.topics.items())
            if topic.error is None and (include_internal or not name.startswith("__"))
        }

    def partitions(self, topic: str) -> list[int]:
        """The partition ids of `topic`, sorted. Raises UnknownTopicError if it does not exist."""
        futures = self._client.describe_topics(TopicCollection([topic]), request_timeout=self.timeout_s)
        try:
            description = self._wait_one(futures[topic], f"describe topic {topic!r}")
        except UnknownTopicError:
            raise self._unknown_topic(topic) from None
        return sorted(p.id for p in description.partitions)

    def log_offsets(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, PartitionOffsets]:
        """Log start and log end offset of each partition (two list_offsets requests in all)."""
        keys = list(dict.fromkeys(partitions))
        earliest = self._list_offsets(keys, OffsetSpec.earliest(), "earliest offsets")
        latest = self._list_offsets(keys, OffsetSpec.latest(), "latest offsets")
        return {key: PartitionOffsets(key[0], key[1], earliest[key], latest[key]) for key in keys}

    def offsets_for_timestamp(
        self, partitions: Iterable[TopicPartitionKey], timestamp_ms: int
    ) -> dict[TopicPartitionKey, int]:
        """The first offset whose record timestamp is >= `timestamp_ms`; -1 where no such record."""
        keys = list(dict.fromkeys(partitions))
        return self._list_offsets(keys, OffsetSpec.for_timestamp(timestamp_ms), "offsets for timestamp")

    def describe_topic_config(self, topic: str) -> dict[str, TopicConfig]:
        """Every configuration key of `topic` (its overrides and the defaults it inherits), by name,
        like `kafka-configs.sh --describe --all --entity-type topics`. UnknownTopicError if it does not exist."""
        futures = self._client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)],
                                                request_timeout=self.timeout_s)
        try:
            entries = next(iter(self._wait_all(futures, f"describe the configuration of topic {topic!r}").values()))
        except UnknownTopicError:
            raise self._unknown_topic(topic) from None
        return {
            name: TopicConfig(name, entry.value, entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
                              bool(entry.is_read_only), bool(entry.is_sensitive))
            for name, entry in sorted(entries.items())
        }

    def alter_topic_config(self, topic: str, set: Mapping[str, str] | None = None,
                           delete: Iterable[str] = ()) -> dict[str, TopicConfig]:
        """Change only the keys named (an incremental alter, like `kafka-configs.sh --alter
        --add-config K=V --delete-config K2`): set each key of `set` as the topic's override, and
        delete the override of each key of `delete` (it returns to the default). Every other key is
        left as it is. Returns each named key as it was before, for a snapshot:

            before = kafka.alter_topic_config("orders", set={"retention.ms": "604800000"})
            # restore exactly: set back what was overridden, delete what was a default
            kafka.alter_topic_config("orders", set={k: c.value for k, c in before.items() if c.overridden},
                                     delete=[k for k, c in before.items() if not c.overridden])

        BrokerError (with Kafka's reason) for a key or value the broker refuses; nothing is changed then."""
        changes = dict(set or {})
        deletions = [name for name in dict.fromkeys(delete) if name not in changes]
        if not changes and not deletions:
            return {}
        before = self.describe_topic_config(topic)
        unknown = sorted(name for name in [*changes, *deletions] if name not in before)
        if unknown:
            raise BrokerError(f"kafka cluster {self.name!r}: topic {topic!r} has no configuration key "
                              f"{', '.join(unknown)}")
        entries = [ConfigEntry(name, str(value), incremental_operation=AlterConfigOpType.SET)
                   for name, value in changes.items()]
        entries += [ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE) for name in deletions]
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
        futures = self._client.incremental_alter_configs([resource], request_timeout=self.timeout_s)
        self._wait_all(futures, f"alter the configuration of topic {topic!r}")
        return {name: before[name] for name in [*changes, *deletions]}

    def list_groups(self) -> list[tuple[str, str]]:
        """Every consumer group as (group_id, state), sorted by group id."""
        result = self._wait_one(self._client.list_consumer_groups(request_timeout=self.timeout_s), "list groups")
        # list_consumer_groups reports a failure in .errors instead of raising; a partial list would lie.
        if result.errors:
            raise self._translate(KafkaException(result.errors[0]), "list groups")
        return sorted((g.group_id, _STATE_NAMES.get(g.state, "Unknown")) for g in result.valid)

    def describe_group(self, group: str) -> ConsumerGroup:
        """State and members of `group`; a group that does not exist reads as Dead with no members."""
        futures = self._client.describe_consumer_groups([group], request_timeout=self.timeout_s)
        description = self._wait_one(futures[group], f"describe group {group!r}")
        members = tuple(
            GroupMember(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                group_instance_id=m.group_instance_id,
                assignment=tuple(sorted(
                    (tp.topic, tp.partition) for tp in (m.assignment.topic_partitions if m.assignment else [])
                )),
            )
            for m in description.members
        )
        return ConsumerGroup(group, _STATE_NAMES.get(description.state, "Unknown"), members)

    def committed_offsets(self, group: str) -> dict[TopicPartitionKey, int]:
        """The group's committed offsets, only partitions that have one.

        The order is the group coordinator's, as kafka-consumer-groups.sh receives it too.
        """
        request = [ConsumerGroupTopicPartitions(group)]
        futures = self._client.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
        result = self._wait_one(futures[group], f"read committed offsets of group {group!r}")
        offsets: dict[TopicPartitionKey, int] = {}
        for tp in result.topic_partitions:
            if tp.error is not None:
                raise BrokerError(
                    f"kafka cluster {self.name!r}: reading the committed offset of group {group!r} on "
                    f"{tp.topic}:{tp.partition} failed: {tp.error.str()}"
                )
            if tp.offset >= 0:
                offsets[(tp.topic, tp.partition)] = tp.offset
        return offsets

    def group_lag(self, group: str) -> list[PartitionLag]:
        """Lag of every partition the group has committed or has assigned, sorted by partition.

        Lag is log end minus committed offset (None where nothing is committed), like
        `kafka-consumer-groups.sh --describe`.
        """
        committed = self.committed_offsets(group)
        assigned = [tp for member in self.describe_group(group).members for tp in member.assignment]
        keys = sorted(set(committed) | set(assigned))
        if not keys:
            return []
        latest = self._list_offsets(keys, OffsetSpec.latest(), "latest offsets")
        lags = []
        for key in keys:
            current = committed.get(key)
            lag = None if current is None else latest[key] - current
            lags.append(PartitionLag(key[0], key[1], current, latest[key], lag))
        return lags

    # -- writes -----------------------------------------------------------------------------

    def alter_group_offsets(
        self, group: str, offsets: Mapping[TopicPartitionKey, int]
    ) -> dict[TopicPartitionKey, str | None]:
        """Commit `offsets` for `group`, which must have no members.

        Returns, per partition, None when it was committed or the broker's error text when it was
        not: the alter is not atomic, so some partitions may succeed while others fail.
        Raises PreconditionError (naming state and members) if the group has members.
        """
        negative = [f"{t}:{p}={o}" for (t, p), o in offsets.items() if o < 0]
        if negative:
            raise ValueError(f"offsets must be >= 0 (resolve earliest/latest first): {', '.join(negative[:5])}")
        if not offsets:
            return {}
        self._require_inactive(group)
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p, o) for (t, p), o in offsets.items()])]
        futures = self._client.alter_consumer_group_offsets(request, request_timeout=self.timeout_s)
        try:
            result = self._wait_one(futures[group], f"alter offsets of group {group!r}")
        except BrokerError as exc:
            if "UNKNOWN_MEMBER_ID" in str(exc):  # a consumer joined between our check and the alter
                self._require_inactive(group)
            raise
        outcome: dict[TopicPartitionKey, str | None] = {key: "no answer for this partition" for key in offsets}
        for tp in result.topic_partitions:
            if tp.error is not None and tp.error.code() == KafkaError.UNKNOWN_MEMBER_ID:
                self._require_inactive(group)
            outcome[(tp.topic, tp.partition)] = (
                f"{tp.error.name()}: {tp.error.str()}" if tp.error is not None else None
            )
        return outcome

    def create_topic(self, name: str, partitions: int, replication_factor: int = -1) -> None:
        """Create a topic (replication factor -1: the broker's default) and wait for its leaders."""
        futures = self._client.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)],
            request_timeout=self.timeout_s, operation_timeout=self.timeout_s,
        )
        self._wait_one(futures[name], f"create topic {name!r}")
        deadline = time.monotonic() + self.timeout_s
        while True:  # a new topic's partitions answer list_offsets only once they have a leader
            futures = self._client.describe_topics(TopicCollection([name]), request_timeout=self.timeout_s)
            try:
                description = self._wait_one(futures[name], f"describe topic {name!r}")
                if len(description.partitions) == partitions and all(p.leader for p in description.partitions):
                    return
            except UnknownTopicError:
                pass
            if time.monotonic() > deadline:
                raise self._unreachable(f"topic {name!r} was created but its partitions have no leader yet")
            time.sleep(0.05)

    def delete_records_before(self, offsets: Mapping[TopicPartitionKey, int]) -> dict[TopicPartitionKey, int]:
        """Delete every record before the given offset of each partition; returns the new log starts."""
        request = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        futures = self._client.delete_records(request, request_timeout=self.timeout_s, operation_timeout=self.timeout_s)
        results = self._wait_all(futures, "delete records")
        return {(tp.topic, tp.partition): deleted.low_watermark for tp, deleted in results.items()}

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _client(self) -> AdminClient:
        if self._admin is None:
            raise RuntimeError(f"{self!r} is closed")
        return self._admin

    def _require_inactive(self, group: str) -> None:
        described = self.describe_group(group)
        if not described.is_inactive:
            members = ", ".join(f"{m.client_id}@{m.host} ({m.member_id})" for m in described.members[:10])
            more = f" and {len(described.members) - 10} more" if len(described.members) > 10 else ""
            raise PreconditionError(
                f"consumer group {group!r} on kafka cluster {self.name!r} is {described.state} with "
                f"{len(described.members)} member(s): {members or 'none listed'}{more}. Offsets can only be "
                f"changed while the group is Empty: stop its consumers and try again."
            )

    def _list_offsets(
        self, keys: list[TopicPartitionKey], spec: OffsetSpec, what: str
    ) -> dict[TopicPartitionKey, int]:
        offsets: dict[TopicPartitionKey, int] = {}
        pending, deadline = list(keys), time.monotonic() + self.timeout_s
        while pending:
            remaining = max(0.5, deadline - time.monotonic())
            futures = self._client.list_offsets(
                {TopicPartition(t, p): spec for t, p in pending}, request_timeout=remaining
            )
            # A partition whose leader just moved (or was just created) answers NOT_LEADER: ask again.
            retry = [] if time.monotonic() < deadline - 0.2 else None
            results = self._wait_all(futures, what, retry=retry, timeout_s=remaining)
            offsets.update({(tp.topic, tp.partition): info.offset for tp, info in results.items()})
            pending = retry or []
            if pending:
                time.sleep(0.1)
        return {key: offsets[key] for key in keys}

    def _wait_one(self, future: concurrent.futures.Future, action: str):
        return self._wait_all({None: future}, action)[None]

    def _wait_all(
        self, futures: Mapping, action: str, retry: list[TopicPartitionKey] | None = None,
        timeout_s: float | None = None,
    ) -> dict:
        """Every future's result, all within one deadline; per-partition unknown topics together.

        With `retry`, partitions that fail with a retriable error are added to it instead.
        """
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s) + _GRACE_S
        results, unknown = {}, []
        try:
            for key, future in futures.items():
                try:
                    results[key] = future.result(timeout=max(0.0, deadline - time.monotonic()))
                except KafkaException as exc:
                    if exc.args[0].code() in _UNKNOWN_TOPIC_CODES and isinstance(key, TopicPartition):
                        unknown.append((key.topic, key.partition))
                    elif retry is not None and isinstance(key, TopicPartition) and (
                        exc.args[0].retriable() or exc.args[0].code() in _RETRIABLE_CODES
                    ):
                        retry.append((key.topic, key.partition))
                    else:
                        raise self._translate(exc, action) from None
        except concurrent.futures.TimeoutError:
            raise self._unreachable(f"no answer to {action}") from None
        finally:
            # A wait that failed or timed out leaves futures running: close() waits for them.
            self._in_flight.extend(future for future in futures.values() if not future.done())
            if self._admin is not None:
                self._admin.poll(0)  # hands librdkafka's queued log lines to `logging`
        if unknown:
            shown = ", ".join(f"{t}:{p}" for t, p in sorted(unknown)[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UnknownTopicError(
                f"kafka cluster {self.name!r} has no partition {shown}{more} ({action})", sorted(unknown)
            )
        return results

    def _translate(self, exc: KafkaException, action: str) -> BrokerError:
        error = exc.args[0]
        if not isinstance(error, KafkaError):
            return BrokerError(f"kafka cluster {self.name!r}: {action} failed: {exc}")
        if error.code() in _UNREACHABLE_CODES:
            return self._unreachable(error.str())
        if error.code() in _UNKNOWN_TOPIC_CODES:
            return UnknownTopicError(f"kafka cluster {self.name!r}: {action} failed: {error.str()}", [])
        return BrokerError(f"kafka cluster {self.name!r}: {action} failed: {error.name()}: {error.str()}")

    def _unreachable(self, reason: str) -> UnreachableError:
        return UnreachableError(
            f"kafka cluster {self.name!r} ({self._bootstrap}) did not answer within {self.timeout_s:g}s: {reason}"
        )

    def _unknown_topic(self, topic: str) -> UnknownTopicError:
        try:
            close = difflib.get_close_matches(topic, list(self.list_topics(include_internal=True)), n=3)
        except BrokerError:
            close = []
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        return UnknownTopicError(f"topic {topic!r} does not exist on kafka cluster {self.name!r}{hint}", [topic])
