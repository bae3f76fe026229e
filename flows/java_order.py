"""The row order of Kafka's Java tools: `kafka-consumer-groups.sh --export` prints its plan in the
iteration order of java.util.HashMap, so `runbook plan --export` emulates that order (JDK 17) to give
the same bytes. Plain Python, no I/O."""
from __future__ import annotations

from collections.abc import Iterable

TopicPartitionKey = tuple[str, int]


def java_string_hash(text: str) -> int:
    """String.hashCode() as an unsigned 32-bit number (topic names are ASCII: one char, one unit)."""
    h = 0
    for char in text:
        h = (31 * h + ord(char)) & 0xFFFFFFFF
    return h


def _topic_partition_hash(key: TopicPartitionKey) -> int:
    """org.apache.kafka.common.TopicPartition.hashCode() as an unsigned 32-bit number."""
    return (31 * (31 + key[1]) + java_string_hash(key[0])) & 0xFFFFFFFF


class JavaHashMap:
    """The key order of a java.util.HashMap (JDK 17) after the same puts: the Java tool prints its
    plan in that order. Buckets are lists in insertion order; a resize splits them in order, as
    Java does. (Buckets of 8+ colliding keys become trees in Java; not modelled.)"""

    def __init__(self, initial_capacity: int | None = None, hash_key=_topic_partition_hash):
        self._hash = hash_key
        self._table: list[list] | None = None
        self._threshold = 0 if initial_capacity is None else _table_size_for(initial_capacity)
        self._size = 0

    def put_all(self, keys: Iterable, bulk: bool = False) -> JavaHashMap:
        """put() each key; `bulk` is putAll(map)/new HashMap(map), which pre-sizes an empty map."""
        keys = list(keys)
        if bulk and keys and self._table is None:
            self._threshold = max(self._threshold, _table_size_for(int(len(keys) / 0.75 + 1.0)))
        for key in keys:
            self._put(key)
        return self

    def keys(self) -> list:
        return [key for bucket in self._table or [] for key in bucket]

    def _put(self, key) -> None:
        if self._table is None:
            self._resize()
        bucket = self._table[self._index(key, len(self._table))]
        if key not in bucket:
            bucket.append(key)
            self._size += 1
            if self._size > self._threshold:
                self._resize()

    def _resize(self) -> None:
        capacity = len(self._table) * 2 if self._table else (self._threshold or 16)
        table: list[list] = [[] for _ in range(capacity)]
        for key in self.keys():
            table[self._index(key, capacity)].append(key)
        self._table, self._threshold = table, int(capacity * 0.75)

    def _index(self, key, capacity: int) -> int:
        h = self._hash(key)
        return (h ^ (h >> 16)) & (capacity - 1)


def _table_size_for(capacity: int) -> int:
    return 1 if capacity <= 1 else 1 << (capacity - 1).bit_length()
