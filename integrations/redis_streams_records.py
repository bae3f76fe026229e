"""The typed records of `redis_streams` (what XINFO, XPENDING, XRANGE and INFO answer) and the errors
only Redis Streams raise. Plain data: no connection here.

Entry ids are kept as text ('1732870000000-0'); field names and values as bytes, since a stream may
hold binary values and a dead-letter copy must be exact. `StreamEntry.text_fields()` decodes for display.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mq_runbooks.base.errors import NotFoundError

__all__ = [
    "ClaimResult", "ConsumerInfo", "DeadLetterCopy", "GroupInfo", "KeyValue", "PendingEntry", "RedisHealth",
    "StreamEntry", "StreamInfo", "UnknownGroupError", "UnknownStreamError", "entry_time_ms", "parse_entry_id",
]

# The largest sequence number of an entry id: '<ms>-18446744073709551615' is the last id of a millisecond.
MAX_SEQUENCE = 2**64 - 1


class UnknownStreamError(NotFoundError):
    """No stream of that name. `known` lists the streams sharing its prefix (as far as a bounded SCAN saw)."""

    def __init__(self, message: str, stream: str, known: list[str]):
        super().__init__(message)
        self.stream = stream
        self.known = known


class UnknownGroupError(NotFoundError):
    """The stream exists but has no consumer group of that name. `known` lists its groups."""

    def __init__(self, message: str, stream: str, group: str, known: list[str]):
        super().__init__(message)
        self.stream = stream
        self.group = group
        self.known = known


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """XINFO STREAM: `first_entry_id`/`last_entry_id` are None for an empty stream; `entries_added`
    counts every XADD ever (trimmed and deleted entries included)."""

    name: str
    length: int
    first_entry_id: str | None
    last_entry_id: str | None
    last_generated_id: str
    entries_added: int | None  # None before Redis 7.0
    max_deleted_entry_id: str | None
    groups: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """XINFO GROUPS, one group: `lag` is None where Redis cannot tell it exactly (after deletions)."""

    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    entries_read: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """XINFO CONSUMERS, one consumer: `idle_ms` since its last attempted read or claim;
    `inactive_ms` since its last successful one (Redis 7.2+, else None)."""

    name: str
    pending: int
    idle_ms: int
    inactive_ms: int | None


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """XPENDING (extended form), one entry: delivered to `consumer` `delivery_count` times, the last
    one `idle_ms` ago, and not acknowledged."""

    id: str
    consumer: str
    idle_ms: int
    delivery_count: int


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry with its fields in stream order (a stream may repeat a field name)."""

    id: str
    fields: tuple[tuple[bytes, bytes], ...]

    def text_fields(self) -> dict[str, str]:
        """The fields decoded for display (undecodable bytes replaced; a repeated name keeps its last value)."""
        return {name.decode(errors="replace"): value.decode(errors="replace") for name, value in self.fields}


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A string key's value and its time to live (`ttl_ms` None: it never expires)."""

    key: str
    value: bytes
    ttl_ms: int | None


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """What a claim moved: `claimed` ids now belong to `consumer`; `not_claimed` were no longer pending
    in the group, idle less than asked, or deleted from the stream (Redis drops those from the PEL)."""

    consumer: str
    claimed: list[str]
    not_claimed: list[str]


@dataclass(frozen=True, slots=True)
class DeadLetterCopy:
    """The copy of `entry_id` in `dead_letter_stream` as `copy_id`. `created` is False when an earlier
    call had copied it already (the copy is the earlier one). `replicas_confirmed` is how many
    replicas acknowledged it with WAIT (None: the primary has no replicas, nothing to wait for)."""

    stream: str
    entry_id: str
    dead_letter_stream: str
    copy_id: str
    created: bool
    replicas_confirmed: int | None


@dataclass(frozen=True, slots=True)
class RedisHealth:
    """PING, INFO server and INFO replication of one server, for `runbook doctor`."""

    version: str
    role: str  # 'master' or 'slave', as Redis says it
    connected_replicas: int
    primary_link: str | None  # a replica's master_link_status ('up' or 'down'); None on a primary


def parse_entry_id(entry_id: str) -> tuple[int, int]:
    """'1732870000000-5' -> (1732870000000, 5); ValueError naming the id if it is not one."""
    ms, _, sequence = entry_id.partition("-")
    if not ms.isdigit() or not (sequence.isdigit() or sequence == ""):
        raise ValueError(f"{entry_id!r} is not a stream entry id (<milliseconds>-<sequence>)")
    return int(ms), int(sequence or 0)


def entry_time_ms(entry_id: str) -> int:
    """The time (ms since the epoch) an entry id stands for."""
    return parse_entry_id(entry_id)[0]


# --- raw replies -> records (the client is built with bytes replies) ---------------------------------


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_dict(reply: Any) -> dict[str, Any]:
    """A flat [name, value, ...] reply (RESP2) or a dict with bytes keys -> {str: value}."""
    if isinstance(reply, dict):
        return {text(key): value for key, value in reply.items()}
    return {text(reply[i]): reply[i + 1] for i in range(0, len(reply), 2)}


def optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def stream_info(name: str, reply: Any) -> StreamInfo:
    data = as_dict(reply)
    first, last = data.get("first-entry"), data.get("last-entry")
    return StreamInfo(
        name=name,
        length=int(data["length"]),
        first_entry_id=text(first[0]) if first else None,
        last_entry_id=text(last[0]) if last else None,
        last_generated_id=text(data["last-generated-id"]),
        entries_added=optional_int(data.get("entries-added")),
        max_deleted_entry_id=text(data["max-deleted-entry-id"]) if data.get("max-deleted-entry-id") else None,
        groups=int(data["groups"]),
    )


def group_info(reply: Any) -> GroupInfo:
    data = as_dict(reply)
    return GroupInfo(
        name=text(data["name"]),
        consumers=int(data["consumers"]),
        pending=int(data["pending"]),
        last_delivered_id=text(data["last-delivered-id"]),
        entries_read=optional_int(data.get("entries-read")),
        lag=optional_int(data.get("lag")),
    )


def consumer_info(reply: Any) -> ConsumerInfo:
    data = as_dict(reply)
    return ConsumerInfo(
        name=text(data["name"]), pending=int(data["pending"]), idle_ms=int(data["idle"]),
        inactive_ms=optional_int(data.get("inactive")),
    )


def pending_entry(reply: Sequence[Any]) -> PendingEntry:
    entry_id, consumer, idle_ms, delivery_count = reply
    return PendingEntry(text(entry_id), text(consumer), int(idle_ms), int(delivery_count))


def stream_entry(reply: Sequence[Any]) -> StreamEntry:
    entry_id, flat = reply
    flat = flat or []
    return StreamEntry(text(entry_id), tuple((bytes(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)))
