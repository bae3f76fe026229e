"""The planning core of `artemis-dlq-redeliver`: what a dead-letter queue holds, grouped by the queue
each message died in (`_AMQ_ORIG_QUEUE`), and exactly which messages go back, in which batches.
Plain Python over a list of messages, so it is tested without a broker:

    plan = plan_redelivery(params, cluster_name, messages, queues_on_broker, sent_back_before)

A message is identified across moves by `id_property` (a property the producer sets), else by its
client message id (JMS/AMQP); Artemis keeps no count of how often a message was sent back, so the
runbook keeps one (mq_runbooks.flows.artemis_dlq_redeliver's ledger) and a message sent back
`poison_after` times or more is poison: parked in `parking_queue`, or left in the DLQ.

Batches are ranges of `_AMQ_ORIG_MESSAGE_ID` (the id each message had in its original queue, unique
on the broker) within one original queue, so Artemis' own moveMessages sends exactly the planned
messages of a batch in one call.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mq_runbooks.integrations.artemis_messages import ORIGINAL_MESSAGE_ID, Message
from mq_runbooks.kit.plans import PlanTable

RUNBOOK_ID = "artemis-dlq-redeliver"


class DlqRedeliverParameters(BaseModel):
    """Parameters of artemis-dlq-redeliver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="an Artemis cluster named in clusters.yaml, e.g. primary")
    dlq: str = Field("DLQ", min_length=1, description="the dead-letter queue to redeliver from")
    queue: str | None = Field(None, min_length=1, description="only messages that died in this queue (default: all)")
    filter: str | None = Field(None, min_length=1, description=(
        "an Artemis filter (a JMS selector) the messages must also match, e.g. \"priority > 4\""))
    limit: int | None = Field(None, ge=1, le=10_000_000, description="send back at most this many (oldest first)")
    poison_after: int | None = Field(None, ge=1, le=1000, description=(
        "a message this runbook already sent back this many times is poison: parked or left, not sent again"))
    poison_action: Literal["park", "leave"] = Field("park", description="park poison in parking_queue, or leave it")
    parking_queue: str | None = Field(None, min_length=1, description="where poison goes (default <dlq>.parking)")
    id_property: str | None = Field(None, min_length=1, description=(
        "the message property that identifies a message across redeliveries (default: its JMS/AMQP message id)"))
    batch_size: int = Field(10_000, ge=1, le=100_000, description=(
        "messages per batch: one moveMessages call and one journal step each (Artemis commits each message "
        "on its own, so a big batch holds no big transaction)"))

    @model_validator(mode="after")
    def _consistent(self) -> DlqRedeliverParameters:
        if self.parking_queue is not None and self.poison_after is None:
            raise ValueError("parking_queue is only used with poison_after")
        if self.queue is not None and self.queue == self.dlq:
            raise ValueError("queue names where the messages died; it cannot be the dead-letter queue itself")
        return self

    @property
    def parking(self) -> str:
        return self.parking_queue or f"{self.dlq}.parking"

    def scope_filter(self) -> str:
        """The filter that selects the dead letters in scope (those with an original queue)."""
        parts = ["_AMQ_ORIG_QUEUE IS NOT NULL"]
        if self.queue:
            parts.append(f"_AMQ_ORIG_QUEUE = {quote(self.queue)}")
        if self.filter:
            parts.append(f"({self.filter})")
        return " AND ".join(parts)


def quote(value: str) -> str:
    """A string literal in an Artemis filter."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class DeadLetter:
    dlq_message_id: int
    original_message_id: int
    original_queue: str
    identity: str | None
    timestamp_ms: int
    sent_back_before: int  # times this runbook sent it back already (by identity)


class Letters:
    """Dead letters, in order: a plain sequence that Prefect's walk over a task's parameters does not
    enter (it enters every tuple and dataclass: 100,000 dead letters took it 30 s per task)."""

    __slots__ = ("_items",)

    def __init__(self, items=()) -> None:
        self._items = tuple(items)

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        return Letters(self._items[index]) if isinstance(index, slice) else self._items[index]

    def __bool__(self) -> bool:
        return bool(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Letters) and other._items == self._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Letters({len(self._items)})"


@dataclass(frozen=True)
class Batch:
    queue: str
    first: int  # _AMQ_ORIG_MESSAGE_ID range, inclusive
    last: int
    messages: Letters
    skip: tuple[int, ...]  # original ids inside the range that are not sent (poison left in the DLQ)

    @property
    def key(self) -> str:
        return f"send-back:{self.queue}:{self.first}-{self.last}"

    def filter(self, params: DlqRedeliverParameters) -> str:
        parts = [f"_AMQ_ORIG_QUEUE = {quote(self.queue)}",
                 f"{ORIGINAL_MESSAGE_ID} BETWEEN {self.first} AND {self.last}"]
        parts += [f"{ORIGINAL_MESSAGE_ID} <> {skipped}" for skipped in self.skip]
        if params.filter:
            parts.append(f"({params.filter})")
        return " AND ".join(parts)


@dataclass(frozen=True)
class QueueGroup:
    original_queue: str
    original_address: str | None
    in_dlq: int
    oldest_ms: int
    newest_ms: int
    send: Letters
    poison: Letters
    queue_exists: bool
    beyond_limit: int


@dataclass(frozen=True)
class DlqPlan(PlanTable):
    cluster: str
    dlq: str
    scope: str
    groups: tuple[QueueGroup, ...]
    batches: tuple[Batch, ...]
    poison_action: str
    parking_queue: str
    poison_after: int | None
    unidentified: int  # messages with no identity: never counted as poison
    # read before listing, so a re-plan knows whether anything entered or left the DLQ since, and
    # verify counts both sides against them: the DLQ's (messages added, message count, acknowledged)
    # and each original queue's messages added
    dlq_seen: tuple[int, int, int] = (0, 0, 0)
    queues_added: tuple[tuple[str, int], ...] = ()

    COLUMNS = ("original queue", "original address", "in DLQ", "oldest", "newest", "send back", "poison",
               "poison goes to", "note")

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        return [(g.original_queue, g.original_address, g.in_dlq, _iso(g.oldest_ms), _iso(g.newest_ms), len(g.send),
                 len(g.poison), (self.parking_queue if self.poison_action == "park" else "left in DLQ") if g.poison
                 else "", _note(g)) for g in self.groups]

    @property
    def to_send(self) -> int:
        return sum(len(g.send) for g in self.groups)

    @property
    def to_park(self) -> tuple[DeadLetter, ...]:
        if self.poison_action != "park":
            return ()
        return tuple(m for g in self.groups for m in g.poison)

    def changes_anything(self) -> bool:
        return bool(self.to_send or self.to_park)

    def summary(self) -> str:
        parts = [f"{self.to_send} dead letter(s) of {self.dlq} to send back to {sum(1 for g in self.groups if g.send)} "
                 f"queue(s) in {len(self.batches)} batch(es)"]
        poison = sum(len(g.poison) for g in self.groups)
        if poison:
            parts.append(f"{poison} poison ({'parked in ' + self.parking_queue if self.poison_action == 'park' else 'left'})")
        gone = [g.original_queue for g in self.groups if not g.queue_exists]
        if gone:
            parts.append(f"{sum(g.in_dlq for g in self.groups if not g.queue_exists)} left: queue(s) "
                         f"{', '.join(gone)} no longer exist")
        return "; ".join(parts)

    def warnings(self) -> list[str]:
        found = []
        if self.poison_after is not None and self.unidentified:
            found.append(f"{self.unidentified} message(s) carry no identity (id_property, or a client message id): "
                         "they are never counted as poison")
        return found

    def to_json(self) -> dict:
        data = super().to_json()
        data.update({"cluster": self.cluster, "dlq": self.dlq, "scope": self.scope, "batches": [
            {"queue": b.queue, "first": b.first, "last": b.last, "messages": len(b.messages)} for b in self.batches]})
        return data


def plan_redelivery(params: DlqRedeliverParameters, cluster: str, messages: list[Message],
                    existing_queues: set[str], sent_back_before: dict[str, int]) -> DlqPlan:
    """Group the dead letters in scope by original queue, pick the oldest `limit`, find the poison, and
    cut each queue's messages into batches of contiguous original ids."""
    letters: dict[str, list[DeadLetter]] = {}
    addresses: dict[str, str | None] = {}
    unidentified = 0
    for message in messages:
        if message.original_queue is None or message.properties.get(ORIGINAL_MESSAGE_ID) is None:
            continue
        identity = message.identity(params.id_property)
        unidentified += identity is None
        letters.setdefault(message.original_queue, []).append(DeadLetter(
            dlq_message_id=message.message_id, original_message_id=int(message.properties[ORIGINAL_MESSAGE_ID]),
            original_queue=message.original_queue, identity=identity, timestamp_ms=message.timestamp_ms,
            sent_back_before=sent_back_before.get(identity, 0) if identity is not None else 0))
        addresses.setdefault(message.original_queue, message.original_address)

    def is_poison(letter: DeadLetter) -> bool:
        return params.poison_after is not None and letter.sent_back_before >= params.poison_after

    # The limit takes the oldest sendable messages, by original id (the order they were first sent in).
    sendable = sorted((m for ms in letters.values() for m in ms if not is_poison(m) and m.original_queue in existing_queues),
                      key=lambda m: m.original_message_id)
    chosen = {m.dlq_message_id for m in (sendable if params.limit is None else sendable[:params.limit])}
    groups, batches = [], []
    for queue in sorted(letters):
        found = sorted(letters[queue], key=lambda m: m.original_message_id)
        exists = queue in existing_queues
        send = Letters(m for m in found if m.dlq_message_id in chosen)
        poison = Letters(m for m in found if is_poison(m))
        groups.append(QueueGroup(
            original_queue=queue, original_address=addresses.get(queue), in_dlq=len(found),
            oldest_ms=min(m.timestamp_ms for m in found), newest_ms=max(m.timestamp_ms for m in found), send=send,
            poison=poison, queue_exists=exists, beyond_limit=len(found) - len(send) - len(poison) if exists else 0))
        left_poison = [m.original_message_id for m in poison] if params.poison_action == "leave" else []
        for start in range(0, len(send), params.batch_size):
            chunk = send[start:start + params.batch_size]
            first, last = chunk[0].original_message_id, chunk[-1].original_message_id
            batches.append(Batch(queue=queue, first=first, last=last, messages=chunk,
                                 skip=tuple(i for i in left_poison if first <= i <= last)))
    return DlqPlan(cluster=cluster, dlq=params.dlq, scope=params.scope_filter(), groups=tuple(groups),
                   batches=tuple(batches), poison_action=params.poison_action, parking_queue=params.parking,
                   poison_after=params.poison_after, unidentified=unidentified)


def _note(group: QueueGroup) -> str:
    if not group.queue_exists:
        return "queue no longer exists: left in the DLQ"
    if group.beyond_limit:
        return f"{group.beyond_limit} beyond limit: left in the DLQ"
    return ""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
