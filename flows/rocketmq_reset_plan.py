"""The plan of rocketmq-reset-offset, apart from the runbook's steps (no Prefect here, so a script or a
benchmark plans and resets in a plain process): per queue the broker, current and target offsets.

    with RocketMQAdmin.from_cluster(cluster) as admin:
        plan = compute_plan(admin, ResetOffsetParameters(cluster="primary", group="billing", to_latest=True), now_ms)
    update_offsets(cluster, "billing", plan.target_offsets())
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from typing import Any

from mq_runbooks.base.clusters import RocketMQCluster
from mq_runbooks.base.errors import NotFoundError, ParameterError, PreconditionError
from mq_runbooks.base.files import read_parameter_file
from mq_runbooks.flows.replay_spec import iso, parse_datetime, parse_duration
from mq_runbooks.flows.rocketmq_reset_params import ResetOffsetParameters
from mq_runbooks.integrations.rocketmq import ConsumerClient, RocketMQAdmin
from mq_runbooks.kit.plans import PlanTable

__all__ = ["QueueReset", "ResetPlan", "compute_plan", "parse_offsets_file", "snapshot_csv", "update_offsets",
           "wait_inactive"]

RUNBOOK_ID = "rocketmq-reset-offset"
QueueKey = tuple[str, str, int]  # topic, broker, queue id


@dataclass(frozen=True)
class QueueReset:
    topic: str
    broker: str
    queue_id: int
    min_offset: int
    broker_offset: int  # the queue's max offset
    current_offset: int | None  # the group's; None when it has none on this queue
    target_offset: int

    @property
    def key(self) -> QueueKey:
        return self.topic, self.broker, self.queue_id

    @property
    def replayed(self) -> int | None:
        """Messages consumed again (current - target); negative: skipped; None: no current offset."""
        return None if self.current_offset is None else self.current_offset - self.target_offset


@dataclass(frozen=True)
class ResetPlan(PlanTable):
    cluster: str
    group: str
    spec: str
    queues: tuple[QueueReset, ...]
    online: tuple[ConsumerClient, ...] = ()
    notes: tuple[str, ...] = field(default=())

    KEY_COLUMNS = ("topic", "broker", "queue")
    INTENT_COLUMNS = ("target",)  # broker and current offsets move by themselves while the gate waits

    def columns(self) -> tuple[str, ...]:
        return ("topic", "broker", "queue", "broker offset", "current", "target", "replayed (+) / skipped (-)")

    def rows(self) -> list[tuple]:
        return [(q.topic, q.broker, q.queue_id, q.broker_offset, q.current_offset, q.target_offset,
                 None if q.replayed is None else f"{q.replayed:+d}") for q in self.queues]

    def changes_anything(self) -> bool:
        return any(q.current_offset != q.target_offset for q in self.queues)

    @property
    def messages_replayed(self) -> int:
        return sum(q.replayed for q in self.queues if q.replayed is not None and q.replayed > 0)

    @property
    def messages_skipped(self) -> int:
        return sum(-q.replayed for q in self.queues if q.replayed is not None and q.replayed < 0)

    def summary(self) -> str:
        changed = sum(q.current_offset != q.target_offset for q in self.queues)
        return (f"{changed} of {len(self.queues)} queue(s) of {self.group} change ({self.spec}): "
                f"{self.messages_replayed} message(s) replayed, {self.messages_skipped} skipped")

    def warnings(self) -> tuple[str, ...]:
        if not self.online:
            return self.notes
        clients = ", ".join(f"{c.client_id} ({c.address})" for c in self.online[:10])
        return (f"{len(self.online)} consumer(s) of {self.group} are online and would overwrite the reset: "
                f"{clients}",) + self.notes

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "cluster": self.cluster, "group": self.group, "spec": self.spec,
                "messages_replayed": self.messages_replayed, "messages_skipped": self.messages_skipped}

    def target_offsets(self) -> dict[QueueKey, int]:
        return {q.key: q.target_offset for q in self.queues}


# --- observe and plan ------------------------------------------------------------------------------

def parse_offsets_file(text: str) -> dict[QueueKey, int]:
    """topic,broker,queue,offset lines (this runbook's snapshot); ParameterError naming the bad line."""
    offsets: dict[QueueKey, int] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or (number == 1 and row[0] == "topic"):
            continue
        try:
            topic, broker, queue, offset = (cell.strip() for cell in row)
            offsets[(topic, broker, int(queue))] = int(offset)
        except ValueError:
            raise ParameterError(RUNBOOK_ID, [("from_file", f"line {number} is not topic,broker,queue,offset: "
                                                            f"{','.join(row)!r}")]) from None
    if not offsets:
        raise ParameterError(RUNBOOK_ID, [("from_file", "holds no topic,broker,queue,offset line")])
    return offsets


def _timestamp(params: ResetOffsetParameters, now_ms: int) -> int | None:
    if params.to_datetime is not None:
        return parse_datetime(params.to_datetime)
    if params.by_duration is not None:
        return now_ms - parse_duration(params.by_duration)
    return None


def compute_plan(admin: RocketMQAdmin, params: ResetOffsetParameters, now_ms: int) -> ResetPlan:
    """Read the group and its queues and compute each queue's target (nothing changes)."""
    progress = admin.progress(params.group)
    if not progress and params.group not in admin.groups():
        raise ParameterError(RUNBOOK_ID, [("group", f"{params.group!r} is not a consumer group of rocketmq "
                                                    f"cluster {admin.name!r} (no subscription, no offsets)")])
    current = {(p.topic, p.broker, p.queue_id): p.consumer_offset for p in progress}
    from_file = None
    if params.from_file is not None:
        from_file = parse_offsets_file(read_parameter_file(params.from_file, runbook=RUNBOOK_ID,
                                                           parameter="from_file"))
        topics = sorted({t for t, _, _ in from_file})
    else:
        topics = params.topic or sorted({p.topic for p in progress if not p.topic.startswith(("%RETRY%", "%DLQ%"))})
    problems, queues = [], {}
    for topic in topics:
        try:
            queues[topic] = admin.queues(topic)
        except NotFoundError:
            problems.append(("topic" if from_file is None else "from_file",
                             f"{topic!r} is not a topic of rocketmq cluster {admin.name!r}"))
    if problems:
        raise ParameterError(RUNBOOK_ID, problems)
    if not topics:
        raise ParameterError(RUNBOOK_ID, [("topic", f"group {params.group!r} has offsets on no topic: name one")])
    timestamp = _timestamp(params, now_ms)
    notes: list[str] = []
    rows = []
    for topic in topics:
        for broker, queue_id in queues[topic]:
            key = (topic, broker, queue_id)
            if from_file is not None and key not in from_file:
                continue
            low = admin.min_offset(topic, broker, queue_id)
            high = admin.max_offset(topic, broker, queue_id)
            if timestamp is not None:
                target = admin.offset_by_time(topic, broker, queue_id, timestamp)
            elif params.to_earliest:
                target = low
            elif params.to_latest:
                target = high
            else:
                target = min(max(from_file[key], low), high)
                if target != from_file[key]:
                    notes.append(f"{topic}:{broker}:{queue_id}: offset {from_file[key]} is outside [{low}, {high}]: "
                                 f"using {target}")
            rows.append(QueueReset(topic, broker, queue_id, low, high, current.get(key), target))
    if from_file is not None:
        unknown = sorted(set(from_file) - {q.key for q in rows})
        if unknown:
            raise ParameterError(RUNBOOK_ID, [("from_file", "names queues the topics do not have: " + ", ".join(
                f"{t}:{b}:{q}" for t, b, q in unknown[:10]))])
    spec = params.spec() + (f" (stored at or after {iso(timestamp)})" if timestamp is not None else "")
    return ResetPlan(admin.name, params.group, spec, tuple(rows), tuple(admin.consumer_clients(params.group)),
                     tuple(notes))


def wait_inactive(admin: RocketMQAdmin, group: str, wait_s: float) -> None:
    """Return once the group has no online consumer; PreconditionError naming them after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while online := admin.consumer_clients(group):
        if time.monotonic() >= deadline:
            listed = "\n".join(f"  - {c.client_id} at {c.address} ({c.language})" for c in online)
            waited = f" after waiting {wait_s:.0f}s" if wait_s else ""
            raise PreconditionError(
                f"group {group!r} has {len(online)} online consumer(s){waited}: they would overwrite the reset "
                f"with their own offsets. Stop them (or pass wait_for_inactive=SECONDS). Online:\n{listed}")
        time.sleep(1)


# --- changes -------------------------------------------------------------------------------------

def update_offsets(cluster: RocketMQCluster, group: str, offsets: dict[QueueKey, int]) -> int:
    with RocketMQAdmin.from_cluster(cluster) as admin:
        for (topic, broker, queue_id), offset in sorted(offsets.items()):
            admin.reset_offset(group, topic, broker, queue_id, offset)
    return len(offsets)


def snapshot_csv(plan: ResetPlan) -> str:
    return "topic,broker,queue,offset\n" + "".join(
        f"{q.topic},{q.broker},{q.queue_id},{q.current_offset}\n" for q in plan.queues if q.current_offset is not None)
