"""Redis Streams as runbooks see them: observe a stream and its consumer groups, and the few
changes the runbooks make (claim, acknowledge, dead-letter, delete a consumer, move a group).

    with RedisStreams.from_cluster(clusters.redis_cluster("primary")) as streams:
        stuck = streams.pending("orders", "billing", consumer="billing-1", min_idle_ms=60_000)
        streams.claim("orders", "billing", [p.id for p in stuck], "billing-2", min_idle_ms=60_000)

Every call answers within about the cluster's `socket_timeout_s` (no retries) or raises
`UnreachableError`, one line naming the URL without its password. An unknown stream raises
`UnknownStreamError`, an unknown group `UnknownGroupError` (both `NotFoundError`, so the CLI exits 2),
naming what exists with suggestions; a state an action may not run in raises `PreconditionError`;
anything else Redis refuses raises `BrokerError` with Redis's reason.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import redis
import redis.exceptions

from mq_runbooks.base.errors import BrokerError, NotFoundError, PreconditionError, UnreachableError, UsageError
from mq_runbooks.integrations import redis_streams_records as records
from mq_runbooks.integrations.redis_streams_records import (
    ClaimResult, ConsumerInfo, DeadLetterCopy, GroupInfo, KeyValue, PendingEntry, RedisHealth, StreamEntry, StreamInfo,
    UnknownGroupError, UnknownStreamError, parse_entry_id, text,
)

if TYPE_CHECKING:
    from mq_runbooks.base.clusters import RedisCluster

__all__ = [
    "ClaimResult", "ConsumerInfo", "DeadLetterCopy", "GroupInfo", "KeyValue", "PendingEntry", "RedisHealth",
    "RedisStreams",
    "StreamEntry", "StreamInfo", "UnknownGroupError", "UnknownStreamError", "PROVENANCE_FIELDS",
]

# The fields a dead-letter copy carries after the entry's own, in this order.
PROVENANCE_FIELDS = ("dlq.original.stream", "dlq.original.id", "dlq.original.group", "dlq.original.consumer",
                     "dlq.delivery.count")

# Copy an entry to the dead-letter stream unless the marker hash says it was copied already; the check,
# the copy and the marker are one atomic script, so a crash or a second caller can never make two copies.
# An earlier copy is marked again (the same value): a write on this connection that WAIT can confirm,
# and since replication is ordered, confirming it confirms the earlier copy too.
# KEYS: stream, marker hash, dead-letter stream. ARGV: marker field, entry id, provenance name/value pairs.
_DEAD_LETTER_SCRIPT = """
local copied = redis.call('HGET', KEYS[2], ARGV[1])
if copied then
  redis.call('HSET', KEYS[2], ARGV[1], copied)
  return {0, copied}
end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then return {-1, ''} end
local fields = found[1][2]
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[3], '*', unpack(fields))
redis.call('HSET', KEYS[2], ARGV[1], id)
return {1, id}
"""

# Remove a consumer only while its pending list is empty, checked in the same atomic step.
_DELETE_CONSUMER_SCRIPT = """
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""

_BATCH = 1000  # ids per XCLAIM / XACK command; a pipeline sends all batches in one round trip
_PAGE = 1000  # XPENDING entries per page
_COUNT_PAGE = 10_000  # XRANGE entries per page when counting
_SEPARATORS = ":.-_/{"  # what separates a stream name's namespace from the rest (orders:eu, orders-eu)
_SCAN_LIMIT = 100  # SCAN calls when listing streams for a suggestion (at most ~100,000 keys looked at)


class RedisStreams:
    """One Redis server's streams (sync; use as a context manager). Replies are bytes; ids and names
    come back as text, entry fields as bytes. It owns the redis-py client it is given (it turns off
    that client's reply parsing and closes it): build one with `from_cluster`."""

    def __init__(self, client: redis.Redis, *, name: str = "redis", display_url: str = "", timeout_s: float = 5.0):
        self.name = name
        self.timeout_s = timeout_s
        self.where = f"redis {name!r} ({display_url})" if display_url else f"redis {name!r}"
        self._redis = client
        # Raw replies (parsed in redis_streams_records): redis-py's own parsing turns entries into dicts,
        # which would drop a repeated field name from a dead-letter copy.
        self._redis.response_callbacks.clear()
        self._version: tuple[int, ...] | None = None

    @classmethod
    def from_cluster(cls, cluster: RedisCluster) -> RedisStreams:
        """The client of a redis cluster of clusters.yaml (its URL, ACL user, TLS and timeout)."""
        return cls(cluster.client(), name=cluster.name, display_url=cluster.display_url,
                   timeout_s=cluster.socket_timeout_s)

    def __enter__(self) -> RedisStreams:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._redis.close()

    # --- the server ------------------------------------------------------------------------------

    def health(self) -> RedisHealth:
        """PING, the version, the role and the replicas: what `runbook doctor` shows."""
        ping, server, replication = self._pipeline("PING", [("PING",), ("INFO", "server"), ("INFO", "replication")])
        if text(ping) != "PONG":
            raise BrokerError(f"{self.where} answered PING with {text(ping)!r}")
        server_info, replication_info = _info(server), _info(replication)
        self._version = _version(server_info.get("redis_version", "0"))
        return RedisHealth(
            version=server_info.get("redis_version", "?"),
            role=replication_info.get("role", "?"),
            connected_replicas=int(replication_info.get("connected_slaves", 0)),
            primary_link=replication_info.get("master_link_status"),
        )

    def connected_replicas(self) -> int:
        """INFO replication's connected_slaves: how many replicas WAIT can wait for."""
        return int(_info(self._call("INFO replication", "INFO", "replication")).get("connected_slaves", 0))

    def server_version(self) -> tuple[int, ...]:
        """The server's version, e.g. (7, 2, 4) (asked once, then remembered)."""
        if self._version is None:
            self._version = _version(_info(self._call("INFO server", "INFO", "server")).get("redis_version", "0"))
        return self._version

    def streams(self, limit: int = 1000, prefix: str = "") -> list[str]:
        """Names of the streams on the server whose name starts with `prefix` (a bounded SCAN: at
        most `limit` names), sorted."""
        found: set[str] = set()
        cursor: Any = 0
        match = ("MATCH", _glob_escape(prefix) + "*") if prefix else ()
        for _ in range(_SCAN_LIMIT):
            cursor, keys = self._call("SCAN", "SCAN", cursor, *match, "COUNT", 1000, "TYPE", "stream")
            found.update(text(key) for key in keys)
            if int(cursor) == 0 or len(found) >= limit:
                break
        return sorted(found)[:limit]

    # --- observe ---------------------------------------------------------------------------------

    def stream_info(self, stream: str) -> StreamInfo:
        """Length, first and last entry, entries ever added, number of groups (XINFO STREAM)."""
        return records.stream_info(stream, self._call("XINFO STREAM", "XINFO", "STREAM", stream, stream=stream))

    def groups(self, stream: str) -> list[GroupInfo]:
        """Every consumer group of the stream (XINFO GROUPS)."""
        return [records.group_info(g) for g in self._call("XINFO GROUPS", "XINFO", "GROUPS", stream, stream=stream)]

    def group(self, stream: str, group: str) -> GroupInfo:
        """One group: last-delivered-id, entries-read, lag, pending. UnknownGroupError lists the others."""
        groups = self.groups(stream)
        for info in groups:
            if info.name == group:
                return info
        raise _unknown_group(self.where, stream, group, [g.name for g in groups])

    def consumers(self, stream: str, group: str) -> list[ConsumerInfo]:
        """The group's consumers with their pending counts and idle times (XINFO CONSUMERS)."""
        reply = self._call("XINFO CONSUMERS", "XINFO", "CONSUMERS", stream, group, stream=stream, group=group)
        return [records.consumer_info(c) for c in reply]

    def pending(
        self, stream: str, group: str, *, consumer: str | None = None, min_idle_ms: int = 0,
        start: str = "-", end: str = "+", limit: int | None = None,
    ) -> list[PendingEntry]:
        """Pending entries of the group (or of one consumer) idle at least `min_idle_ms`, in id order,
        read in pages (XPENDING ... IDLE ms start end count [consumer]); at most `limit` of them."""
        if min_idle_ms < 0:
            raise UsageError(f"min_idle_ms must be 0 or more, got {min_idle_ms}")
        found: list[PendingEntry] = []
        while limit is None or len(found) < limit:
            count = _PAGE if limit is None else min(_PAGE, limit - len(found))
            command: list[Any] = ["XPENDING", stream, group]
            if min_idle_ms:
                command += ["IDLE", min_idle_ms]
            command += [start, end, count] + ([consumer] if consumer is not None else [])
            page = [records.pending_entry(p) for p in self._call("XPENDING", *command, stream=stream, group=group)]
            found.extend(page)
            if len(page) < count:
                break
            start = f"({page[-1].id}"
        return found

    def entries(self, stream: str, ids: Sequence[str]) -> dict[str, StreamEntry | None]:
        """The entries of these ids with their fields, in the order asked; None where the stream no
        longer holds the id (trimmed or deleted, though it may still be pending)."""
        _check_ids(ids)
        found: dict[str, StreamEntry | None] = {}
        for chunk in _chunks(list(ids), _BATCH):
            replies = self._pipeline("XRANGE", [("XRANGE", stream, i, i) for i in chunk], stream=stream)
            for entry_id, reply in zip(chunk, replies):
                found[entry_id] = records.stream_entry(reply[0]) if reply else None
        if found and all(entry is None for entry in found.values()):
            self.stream_info(stream)  # UnknownStreamError if the stream itself is missing
        return found

    def entry_id_at(self, stream: str, time_ms: int) -> str | None:
        """The id of the first entry at or after `time_ms` (ms since the epoch); None if there is none."""
        reply = self._call("XRANGE", "XRANGE", stream, f"{int(time_ms)}-0", "+", "COUNT", 1, stream=stream)
        if not reply:
            self.stream_info(stream)  # UnknownStreamError rather than None for a stream that does not exist
        return text(reply[0][0]) if reply else None

    def last_id_before(self, stream: str, time_ms: int) -> str:
        """The id of the last entry before `time_ms`, or '0-0' if there is none: as a group's
        last-delivered id, it makes the group read every entry from `time_ms` on."""
        self.stream_info(stream)  # an unknown stream is an error, not '0-0'
        reply = self._call("XREVRANGE", "XREVRANGE", stream, f"({int(time_ms)}-0", "-", "COUNT", 1, stream=stream)
        return text(reply[0][0]) if reply else "0-0"

    def count_between(self, stream: str, start: str = "-", end: str = "+") -> int:
        """How many entries the stream holds from `start` to `end` (XRANGE syntax: '-', '+', ids,
        '(' for exclusive). Exact: XLEN for the whole stream, else XRANGE in pages of 10,000."""
        if start == "-" and end == "+":
            total = int(self._call("XLEN", "XLEN", stream, stream=stream))
        else:
            total = sum(len(page) for page in self._range_pages(stream, start, end))
        if total == 0:
            self.stream_info(stream)  # UnknownStreamError rather than 0 for a stream that does not exist
        return total

    def read_range(self, stream: str, start: str = "-", end: str = "+") -> list[StreamEntry]:
        """The entries from `start` to `end` (XRANGE syntax) with their fields, in id order, read in
        pages of 10,000: e.g. a dead-letter stream, to check what it holds. [] for an empty range;
        UnknownStreamError for a stream that does not exist."""
        found = [records.stream_entry(reply) for page in self._range_pages(stream, start, end) for reply in page]
        if not found:
            self.stream_info(stream)
        return found

    def _range_pages(self, stream: str, start: str, end: str) -> Iterator[list[Any]]:
        while True:
            page = self._call("XRANGE", "XRANGE", stream, start, end, "COUNT", _COUNT_PAGE, stream=stream)
            yield page
            if len(page) < _COUNT_PAGE:
                return
            start = f"({text(page[-1][0])}"

    # --- act -------------------------------------------------------------------------------------

    def claim(
        self, stream: str, group: str, ids: Sequence[str], consumer: str, *, min_idle_ms: int = 0,
        batch_size: int = _BATCH,
    ) -> ClaimResult:
        """Give these pending entries to `consumer` (created if new), if each is still pending and idle
        at least `min_idle_ms` (so an entry its owner just worked on is left alone). XCLAIM ... JUSTID in
        batches, all in one pipeline: the claim is not a delivery, so delivery counts stay as they are
        and the consumer reads the entries from its pending list (XREADGROUP ... 0)."""
        _check_ids(ids)
        if min_idle_ms < 0 or batch_size < 1:
            raise UsageError(f"min_idle_ms must be 0 or more and batch_size 1 or more, got {min_idle_ms}, {batch_size}")
        commands = [("XCLAIM", stream, group, consumer, min_idle_ms, *chunk, "JUSTID")
                    for chunk in _chunks(list(ids), batch_size)]
        claimed = {text(i) for reply in self._pipeline("XCLAIM", commands, stream=stream, group=group) for i in reply}
        return ClaimResult(consumer, [i for i in ids if i in claimed], [i for i in ids if i not in claimed])

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries for the group (XACK); how many were pending and are acknowledged now."""
        _check_ids(ids)
        commands = [("XACK", stream, group, *chunk) for chunk in _chunks(list(ids), _BATCH)]
        return sum(int(n) for n in self._pipeline("XACK", commands, stream=stream, group=group))

    def dead_letter(
        self, stream: str, group: str, entry_id: str, *, consumer: str, delivery_count: int,
        dead_letter_stream: str | None = None, wait_timeout_ms: int | None = None,
    ) -> DeadLetterCopy:
        """Copy one entry to the dead-letter stream (default '<stream>:dlq') exactly once: its fields,
        then the provenance (PROVENANCE_FIELDS). A second call finds the first copy in the marker hash
        '<dead_letter_stream>:copies' (field: JSON [stream, group, id]) and returns it with created=False.

        Marker, not a scan of the dead-letter stream: the check and the copy are one atomic script, so
        two callers or a crash between copy and bookkeeping cannot make two copies, and it keeps
        working when the dead-letter stream is trimmed or consumed. When the primary has replicas, the
        copy is confirmed with WAIT (all of them, within `wait_timeout_ms`, default half the socket
        timeout); fewer raises BrokerError: do not acknowledge the entry then.
        PreconditionError if the entry is gone from the stream and was never copied."""
        _check_ids([entry_id])
        self.group(stream, group)  # the provenance names a group that exists
        target = dead_letter_stream or f"{stream}:dlq"
        marker = f"{target}:copies"
        provenance = [stream, entry_id, group, consumer, str(delivery_count)]
        pairs = [part for pair in zip(PROVENANCE_FIELDS, provenance) for part in pair]
        field = json.dumps([stream, group, entry_id])
        replicas = self.connected_replicas()
        timeout_ms = wait_timeout_ms if wait_timeout_ms is not None else int(self.timeout_s * 500)
        commands: list[tuple[Any, ...]] = [
            ("EVAL", _DEAD_LETTER_SCRIPT, 3, stream, marker, target, field, entry_id, *pairs)]
        if replicas:
            commands.append(("WAIT", replicas, timeout_ms))  # same connection as the copy: a pipeline
        replies = self._pipeline("dead-letter copy", commands, stream=stream)
        outcome, copy_id = int(replies[0][0]), text(replies[0][1])
        if outcome < 0:
            raise PreconditionError(
                f"{self.where}: entry {entry_id} is no longer in stream {stream!r} (trimmed or deleted) "
                f"and was never copied to {target!r}: nothing to copy")
        confirmed = int(replies[1]) if replicas else None
        if confirmed is not None and confirmed < replicas:
            raise BrokerError(
                f"{self.where}: the copy of {stream} {entry_id} in {target!r} ({copy_id}) reached {confirmed} of "
                f"{replicas} replicas within {timeout_ms} ms: not confirmed, do not acknowledge the entry yet")
        return DeadLetterCopy(stream, entry_id, target, copy_id, outcome == 1, confirmed)

    def delete_consumer(self, stream: str, group: str, consumer: str) -> None:
        """Remove a consumer from the group, only while it holds no pending entries (checked
        atomically with the removal): PreconditionError names how many it holds; NotFoundError lists
        the group's consumers if it is not one of them."""
        consumers = {c.name: c for c in self.consumers(stream, group)}
        if consumer not in consumers:
            known = ", ".join(sorted(consumers)) or "none"
            raise NotFoundError(f"group {group!r} of stream {stream!r} on {self.where} has no consumer "
                                f"{consumer!r}{_suggest(consumer, list(consumers))} (consumers: {known})")
        held = self._call("delete consumer", "EVAL", _DELETE_CONSUMER_SCRIPT, 1, stream, group, consumer,
                          stream=stream, group=group)
        if int(held) < 0:
            pending = next((c.pending for c in self.consumers(stream, group) if c.name == consumer), 0)
            raise PreconditionError(
                f"consumer {consumer!r} of group {group!r} (stream {stream!r}) still holds {pending or 'some'} "
                "pending entries: claim or acknowledge them before deleting it")

    def set_last_delivered(self, stream: str, group: str, last_id: str, *, entries_read: int | None = None) -> GroupInfo:
        """Move the group's last-delivered id (XGROUP SETID): entries after `last_id` are delivered
        (again), those up to it are skipped. `last_id` is an id, '0-0' (everything again) or '$' (skip
        everything). On Redis 7+ ENTRIESREAD is sent too (default: entries added minus the entries
        after `last_id`), so the group's lag stays exact. Returns the group as it is afterwards."""
        if last_id != "$":
            _check_ids([last_id])
        self.group(stream, group)
        command: list[Any] = ["XGROUP", "SETID", stream, group, last_id]
        if self.server_version() >= (7,):
            if entries_read is None:
                info = self.stream_info(stream)
                after = 0 if last_id == "$" else self.count_between(stream, f"({last_id}", "+")
                entries_read = (info.entries_added or 0) - after
            command += ["ENTRIESREAD", entries_read]
        self._call("XGROUP SETID", *command, stream=stream, group=group)
        return self.group(stream, group)

    # --- plain keys (a runbook's flags, limits, markers) -----------------------------------------

    def key(self, key: str) -> KeyValue | None:
        """A string key's value and time to live (GET and PTTL), or None when it does not exist.
        BrokerError when the key holds another type (WRONGTYPE)."""
        value, ttl = self._pipeline(f"GET {key}", [("GET", key), ("PTTL", key)])
        if value is None:
            return None
        return KeyValue(key, bytes(value), int(ttl) if int(ttl) >= 0 else None)

    def set_key(self, key: str, value: bytes | str, ttl_ms: int | None = None) -> KeyValue | None:
        """Set a string key, with a time to live of `ttl_ms` (None: it never expires, clearing any
        earlier TTL); returns the key as it was before (None: it did not exist), for a snapshot.
        Restore with `set_key(key, before.value, before.ttl_ms)`, or `delete_key(key)` when it was None."""
        if ttl_ms is not None and ttl_ms <= 0:
            raise UsageError(f"ttl_ms must be positive (or None for no expiry), not {ttl_ms}")
        before = self.key(key)
        expiry = ("PX", ttl_ms) if ttl_ms is not None else ()
        self._call(f"SET {key}", "SET", key, value, *expiry)
        return before

    def delete_key(self, key: str) -> KeyValue | None:
        """Delete a string key; returns it as it was (None: there was none, and nothing is done)."""
        before = self.key(key)
        if before is not None:
            self._call(f"DEL {key}", "DEL", key)
        return before

    # --- plumbing --------------------------------------------------------------------------------

    def _call(self, action: str, *command: Any, stream: str | None = None, group: str | None = None) -> Any:
        with self._errors(action, stream, group):
            return self._redis.execute_command(*command)

    def _pipeline(self, action: str, commands: Sequence[Sequence[Any]], *, stream: str | None = None,
                  group: str | None = None) -> list[Any]:
        with self._errors(action, stream, group):
            pipe = self._redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute()

    @contextmanager
    def _errors(self, action: str, stream: str | None, group: str | None) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise BrokerError(f"{self.where} refused the login ({_line(exc)}): check the user and password "
                              "in clusters.yaml") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise UnreachableError(
                f"{self.where} is unreachable (timeout {self.timeout_s:g}s): {_line(exc)}") from None
        except redis.exceptions.ResponseError as exc:
            message = _line(exc)
            if stream is not None and (message.startswith(("NOGROUP", "WRONGTYPE")) or "no such key" in message.lower()):
                raise self._missing(stream, group) from None
            raise BrokerError(f"{self.where}: {action} failed: {message}") from None
        except redis.exceptions.RedisError as exc:
            raise BrokerError(f"{self.where}: {action} failed: {_line(exc)}") from None

    def _missing(self, stream: str, group: str | None) -> BrokerError | NotFoundError:
        """Which is missing, the stream (or the key is no stream) or the group, with what exists instead."""
        kind = text(self._call("TYPE", "TYPE", stream))
        if kind == "none":
            # Suggestions only among the streams of the same namespace (the name up to its last
            # separator): a server is shared, and other teams' stream names are not ours to list.
            prefix = stream[:max(stream.rfind(sep) for sep in _SEPARATORS) + 1]
            if not prefix:
                return UnknownStreamError(f"{self.where} has no stream {stream!r} (only streams sharing a prefix "
                                          f"such as 'orders:' are suggested)", stream, [])
            known = self.streams(prefix=prefix)
            shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "") or "none"
            return UnknownStreamError(f"{self.where} has no stream {stream!r}{_suggest(stream, known)} "
                                      f"(streams named {prefix}*: {shown})", stream, known)
        if kind != "stream":
            return PreconditionError(f"{self.where}: key {stream!r} is a {kind}, not a stream")
        names = [g.name for g in self.groups(stream)]
        return _unknown_group(self.where, stream, group or "?", names)


def _unknown_group(where: str, stream: str, group: str, known: list[str]) -> UnknownGroupError:
    shown = ", ".join(sorted(known)) or "none"
    return UnknownGroupError(f"stream {stream!r} on {where} has no consumer group {group!r}"
                             f"{_suggest(group, known)} (groups: {shown})", stream, group, known)


def _glob_escape(literal: str) -> str:
    """`literal` matched literally by SCAN's MATCH (its glob characters escaped)."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in literal)


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _check_ids(ids: Sequence[str]) -> None:
    for entry_id in ids:
        try:
            parse_entry_id(entry_id)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _info(reply: Any) -> dict[str, str]:
    """INFO's 'key:value' lines -> {key: value}."""
    pairs = (line.split(":", 1) for line in text(reply).splitlines() if ":" in line and not line.startswith("#"))
    return {key: value.strip() for key, value in pairs}


def _version(raw: str) -> tuple[int, ...]:
    return tuple(int(part) for part in raw.split(".") if part.isdigit())


def _line(exc: Exception) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())

