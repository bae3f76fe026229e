"""Messages in an Artemis queue, through Jolokia: count, list (paged), and Artemis' own retry and move
operations, by message id or by filter in batches.

    with ArtemisManagement.from_cluster(cluster) as artemis:
        dead = list_messages(artemis, "DLQ", "_AMQ_ORIG_QUEUE = 'orders'")   # every one, oldest first
        move_matching(artemis, "DLQ", "_AMQ_ORIG_QUEUE = 'orders'", "orders", limit=500)   # 500

A message id is Artemis' internal id of the message *in that queue*: a retried or moved message is a
copy with a new id and `_AMQ_ORIG_MESSAGE_ID` = the old one, so the same id is never moved twice.
Artemis answers `listMessages` and a filtered `countMessages` from at most management-browse-page-size
(200 by default) messages, so listing and filtered counting page through `browse` instead. A filter
Artemis rejects raises `InvalidFilter`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mq_runbooks.base.errors import BrokerError
from mq_runbooks.integrations.artemis import ArtemisManagement, JolokiaFailure, exec_request

__all__ = ["InvalidFilter", "Message", "count", "held_by", "list_messages", "move", "move_matching", "pause", "retry"]

ORIGINAL_QUEUE = "_AMQ_ORIG_QUEUE"
ORIGINAL_ADDRESS = "_AMQ_ORIG_ADDRESS"
ORIGINAL_MESSAGE_ID = "_AMQ_ORIG_MESSAGE_ID"
BULK = 500  # Jolokia requests per HTTP round trip
PAGE = 1000  # messages per browse page


class InvalidFilter(BrokerError):
    """Artemis rejected a filter expression (a selector); the message quotes Artemis' reason."""


@dataclass(frozen=True, slots=True)
class Message:
    message_id: int
    queue: str
    original_queue: str | None
    original_address: str | None
    timestamp_ms: int  # when it was first sent
    durable: bool
    user_id: str | None  # the JMS/AMQP message id a client gave it, if any
    properties: dict[str, Any]

    def identity(self, id_property: str | None) -> str | None:
        """What identifies the message across moves: `id_property`'s value, else the client's message id."""
        if id_property and self.properties.get(id_property) is not None:
            return str(self.properties[id_property])
        return self.user_id


def count(artemis: ArtemisManagement, queue: str, filter: str = "") -> int:
    """Messages in `queue` that match `filter` (exact: a filtered count pages through the queue)."""
    if not filter:
        return int(_on_queue(artemis, queue, "countMessages()"))
    return len(list_messages(artemis, queue, filter))


def list_messages(artemis: ArtemisManagement, queue: str, filter: str = "", limit: int | None = None) -> list[Message]:
    """The messages of `queue` matching `filter` in queue order (at most `limit`), with their properties
    (bodies left out), paging through Artemis' browse."""
    found: list[Message] = []
    page = 1
    while limit is None or len(found) < limit:
        items = _on_queue(artemis, queue, "browse(int,int,java.lang.String)", filter, page=page) or []
        found += [_message(queue, item) for item in items]
        if len(items) < PAGE:
            break
        page += 1
    return found[:limit] if limit is not None else found


def held_by(artemis: ArtemisManagement, queue: str) -> dict[tuple[str, str], list[int]]:
    """The messages each consumer of `queue` holds (delivered, not acknowledged), by (connection id,
    session id): Artemis' listDeliveringMessages, whose consumer names read
    'ServerConsumer [id=<connection>:<session>:<n>, ...'."""
    found: dict[tuple[str, str], list[int]] = {}
    for consumer in json.loads(_on_queue(artemis, queue, "listDeliveringMessagesAsJSON") or "[]"):
        name = str(consumer.get("consumerName", ""))
        key = name.partition("id=")[2].split(",", 1)[0].rsplit(":", 1)[0]  # '<connection>:<session>'
        connection, _, session = key.partition(":")
        found.setdefault((connection, session), []).extend(
            int(element["messageID"]) for element in consumer.get("elements") or [])
    return found


def pause(artemis: ArtemisManagement, queue: str, paused: bool) -> None:
    """Stop (or resume) deliveries of `queue` to its consumers; messages still arrive and wait."""
    _on_queue(artemis, queue, "pause()" if paused else "resume()")


def move_matching(artemis: ArtemisManagement, queue: str, filter: str, to_queue: str, limit: int,
                  flush_every: int = 500) -> int:
    """Artemis' moveMessages: up to `limit` messages of `queue` matching `filter` into `to_queue`,
    committed every `flush_every`; how many moved. A message is moved or left, never copied."""
    return int(_on_queue(artemis, queue, "moveMessages(int,java.lang.String,java.lang.String,boolean,int)",
                         flush_every, filter, to_queue, False, limit, filter_at=1))


def retry(artemis: ArtemisManagement, queue: str, message_ids: list[int]) -> dict[int, bool]:
    """Artemis' retryMessage for each id (back to its original queue): id -> moved. An id no longer in
    `queue` answers False; nothing is moved twice."""
    return _each(artemis, queue, message_ids, lambda mbean, mid: exec_request(mbean, "retryMessage(long)", mid))


def move(artemis: ArtemisManagement, queue: str, message_ids: list[int], to_queue: str) -> dict[int, bool]:
    """Artemis' moveMessage for each id into `to_queue` (which must exist): id -> moved."""
    return _each(artemis, queue, message_ids,
                 lambda mbean, mid: exec_request(mbean, "moveMessage(long,java.lang.String)", mid, to_queue))


def _each(artemis: ArtemisManagement, queue: str, message_ids: list[int], request) -> dict[int, bool]:
    mbean = artemis.queue_mbean(queue)
    done: dict[int, bool] = {}
    for start in range(0, len(message_ids), BULK):
        chunk = message_ids[start:start + BULK]
        for message_id, value in zip(chunk, artemis.bulk([request(mbean, mid) for mid in chunk])):
            if isinstance(value, JolokiaFailure):
                raise BrokerError(f"Artemis failed on message {message_id} of {queue} after {sum(done.values())} "
                                  f"moved in this call: {value}")
            done[message_id] = bool(value)
    return done


def _on_queue(artemis: ArtemisManagement, queue: str, operation: str, *arguments: Any, page: int | None = None,
              filter_at: int = 0) -> Any:
    if page is not None:  # browse(page, pageSize, filter)
        arguments = (page, PAGE, *arguments)
        filter_at = 2
    try:
        return artemis.exec(artemis.queue_mbean(queue), operation, *arguments)
    except JolokiaFailure as exc:
        if exc.error_type.endswith("InvalidFilterExpressionException") or "AMQ229020" in str(exc):
            reason = str(exc).split(" : ", 1)[-1].replace("AMQ229020: ", "")
            raise InvalidFilter(f"Artemis rejects the filter {arguments[filter_at]!r}: {reason}") from None
        raise


_TYPED = ("StringProperties", "LongProperties", "IntProperties", "ShortProperties", "ByteProperties",
          "BooleanProperties", "DoubleProperties", "FloatProperties")


def _message(queue: str, item: dict[str, Any]) -> Message:
    """A message as `browse` describes it (properties grouped by type). An AMQP message's are named
    by where they live ('applicationProperties.msg_id', 'extraProperties._AMQ_ORIG_QUEUE'): those two
    prefixes are dropped, so a property reads the same whichever protocol sent the message."""
    properties: dict[str, Any] = {}
    for group in _TYPED:
        for name, value in (item.get(group) or {}).items():
            properties[name.removeprefix("applicationProperties.").removeprefix("extraProperties.")] = value
    return Message(
        message_id=int(item["messageID"]), queue=queue, original_queue=properties.get(ORIGINAL_QUEUE),
        original_address=properties.get(ORIGINAL_ADDRESS), timestamp_ms=int(item.get("timestamp") or 0),
        durable=bool(item.get("durable")), user_id=item.get("userID") or None, properties=properties)
