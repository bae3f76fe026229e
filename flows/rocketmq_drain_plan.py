"""What rocketmq-drain-stuck observes and plans, and its copy of a stuck message (plain Python, no
Prefect): which queues of a consumer group are stuck, the message each is stuck on, and what a run
would change.

A queue is stuck when, in two samples `sample_ms` apart, the group has an online consumer, messages
wait on the queue (broker offset above the consume offset) and the consume offset did not move: an
orderly consumer retrying a message it can never consume (RocketMQ retries it in place, forever by
default) holds its queue exactly like that. The remedy per queue: copy the message at the consume
offset to `%DLQ%<group>` (or `dead_letter_topic`), then move the offset one past it.

A copy is made once per message, across runs: a ledger (RUNBOOK_SNAPSHOT_DIR/rocketmq-drain-ledger/,
one JSON line per state) says `copying` (with the dead-letter queue's offset before the send) and
then `copied`; a message `copying` but not `copied` (a worker died between the two) is looked for in
the dead-letter queue from that offset, by the DRAINED_FROM property every copy carries.

    with RocketMQAdmin.from_cluster(cluster) as admin:
        plan = observe(admin, DrainStuckParameters(cluster="primary", group="billing"), ledger)
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mq_runbooks.base.errors import BrokerError, ParameterError
from mq_runbooks.flows.replay_spec import iso
from mq_runbooks.flows.rocketmq_drain_params import DrainStuckParameters
from mq_runbooks.integrations.rocketmq import ConsumerClient, QueueProgress, RocketMQAdmin, dlq_topic
from mq_runbooks.kit.plans import PlanTable

__all__ = ["DRAINED_FROM", "DrainPlan", "StuckQueue", "copy_once", "copies_of", "drain_ledger", "observe",
           "refresh"]

RUNBOOK_ID = "rocketmq-drain-stuck"
DRAINED_FROM = "DRAINED_FROM"  # property of each copy: the broker's id of the message it copies
SHOWN_CHARS = 120
REDACTED = "(redacted: show_values=true shows it)"
QueueKey = tuple[str, str, int]  # topic, broker, queue id
# Set by the broker on store: not copied onto the dead letter.
_STORE_PROPERTIES = {"MSG_REGION", "CLUSTER", "WAIT", "DELAY", "TRACE_ON", "REAL_TOPIC", "REAL_QID", "MIN_OFFSET",
                     "MAX_OFFSET", "CONSUME_START_TIME"}


@dataclass(frozen=True)
class StuckQueue:
    topic: str
    broker: str
    queue_id: int
    consume_offset: int  # where the group is stuck: the offset of the message it cannot consume
    broker_offset: int
    message_id: str  # the broker's id (offset message id): what the ledger and DRAINED_FROM record
    client_id: str  # UNIQ_KEY, as producers and consumers see it
    keys: str
    tag: str
    size: int
    reconsume_times: int
    stored_ms: int
    body: str  # REDACTED unless show_values
    dead_letter_topic: str
    copied_before: str | None = None  # the id of the copy an earlier run made

    @property
    def key(self) -> QueueKey:
        return self.topic, self.broker, self.queue_id

    @property
    def target_offset(self) -> int:
        return self.consume_offset + 1

    @property
    def waiting(self) -> int:
        return self.broker_offset - self.consume_offset


@dataclass(frozen=True)
class DrainPlan(PlanTable):
    cluster: str
    group: str
    sample_ms: int
    observed: int  # queues sampled
    online: tuple[ConsumerClient, ...]
    queues: tuple[StuckQueue, ...]
    notes: tuple[str, ...] = ()

    KEY_COLUMNS = ("topic", "broker", "queue")
    INTENT_COLUMNS = ("consume offset", "message id", "dead-letter topic", "new offset")  # the backlog moves on

    def columns(self) -> tuple[str, ...]:
        return ("topic", "broker", "queue", "consume offset", "broker offset", "waiting", "message id", "msg id",
                "keys", "tag", "size", "reconsume times", "stored", "body", "dead-letter topic", "copied before",
                "new offset")

    def rows(self) -> list[tuple]:
        return [(q.topic, q.broker, q.queue_id, q.consume_offset, q.broker_offset, q.waiting, q.message_id,
                 q.client_id, q.keys or "none", q.tag or "none", q.size, q.reconsume_times, iso(q.stored_ms), q.body,
                 q.dead_letter_topic, q.copied_before or "no", q.target_offset) for q in self.queues]

    def summary(self) -> str:
        stuck = f"{len(self.queues)} of {self.observed} observed queue(s) of {self.group} stuck"
        return f"{stuck}: copy each stuck message to its dead-letter topic and move the offset one past it" \
            if self.queues else stuck

    def headline(self) -> str:
        lines = [f"**Group** `{self.group}` on RocketMQ cluster `{self.cluster}` ({len(self.online)} online "
                 f"consumer(s)): **{len(self.queues)}** of {self.observed} observed queue(s) stuck (messages waiting "
                 f"and a consume offset that did not move in {self.sample_ms} ms)."]
        if not self.queues:
            return "\n".join(lines + ["", "Nothing is stuck: nothing will change."])
        return "\n".join(lines + [
            "", "Remedy, per stuck queue: copy the message at the consume offset to the dead-letter topic (once: it "
                f"carries `{DRAINED_FROM}=<its id>`, `RETRY_TOPIC=<its topic>`, so rocketmq-dlq-resend can resend it "
                "once the bug is fixed), then move the group's offset one past it on the broker (a server-side "
                "reset: the online consumers pull from there and go on)."])

    def warnings(self) -> tuple[str, ...]:
        extra = () if self.online else (f"no consumer of {self.group} is online: a stopped group is not stuck "
                                        "(start its consumers, then sample again)",)
        return extra + self.notes

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "cluster": self.cluster, "group": self.group, "sample_ms": self.sample_ms,
                "observed": self.observed, "online": [c.client_id for c in self.online],
                "stuck": [{"topic": q.topic, "broker": q.broker, "queue": q.queue_id, "current": q.consume_offset,
                           "target": q.target_offset, "broker_offset": q.broker_offset, "message_id": q.message_id,
                           "msg_id": q.client_id, "keys": q.keys, "tag": q.tag, "size": q.size,
                           "reconsume_times": q.reconsume_times, "dead_letter_topic": q.dead_letter_topic,
                           "copied_before": q.copied_before} for q in self.queues]}

    def target_offsets(self) -> dict[QueueKey, int]:
        return {q.key: q.target_offset for q in self.queues}


# --- the ledger ------------------------------------------------------------------------------------

def drain_ledger(snapshot_dir: Path, cluster: str, group: str) -> Path:
    return snapshot_dir / "rocketmq-drain-ledger" / f"{cluster}-{group}.jsonl"


def ledger_states(path: Path) -> dict[str, dict[str, Any]]:
    """Message id -> its last ledger line (`copying` with the dead-letter offset before, or `copied`)."""
    states: dict[str, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return states
    for line in filter(str.strip, text.splitlines()):
        entry = json.loads(line)
        if states.get(entry["id"], {}).get("state") != "copied":
            states[entry["id"]] = entry
    return states


def _record(path: Path, message_id: str, state: str, run_id: str, **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"id": message_id, "state": state, "run": run_id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def copies_of(admin: RocketMQAdmin, topic: str, message_id: str, start: int = 0) -> list[str]:
    """Broker ids of the copies of `message_id` (by DRAINED_FROM) in `topic`, from offset `start` of each queue."""
    if not admin.topic_exists(topic):
        return []
    found = []
    for broker, queue_id in admin.queues(topic):
        low = max(start, admin.min_offset(topic, broker, queue_id))
        for message in admin.read_queue(topic, broker, queue_id, low, admin.max_offset(topic, broker, queue_id)):
            if message.properties.get(DRAINED_FROM) == message_id:
                found.append(message.offset_msg_id)
    return found


def _copied_before(admin: RocketMQAdmin, entry: dict[str, Any] | None, topic: str) -> str | None:
    if entry is None:
        return None
    if entry["state"] == "copied":
        return entry["copy"]
    found = copies_of(admin, entry.get("topic", topic), entry["id"], entry.get("from", 0))  # in doubt: look
    return found[0] if found else None


def copy_once(admin: RocketMQAdmin, group: str, queue: StuckQueue, ledger: Path, run_id: str) -> dict[str, Any]:
    """Copy the message `queue` is stuck on to its dead-letter topic, unless the ledger (or, for a copy in
    doubt, the dead-letter topic itself) shows an earlier copy: then that one is returned."""
    earlier = _copied_before(admin, ledger_states(ledger).get(queue.message_id), queue.dead_letter_topic)
    if earlier:
        _record(ledger, queue.message_id, "copied", run_id, copy=earlier, topic=queue.dead_letter_topic)
        return {"message_id": queue.message_id, "copy": earlier, "topic": queue.dead_letter_topic,
                "already_present": True}
    message = admin.read_message(queue.topic, queue.broker, queue.queue_id, queue.consume_offset)
    if message is None or message.offset_msg_id != queue.message_id:
        raise BrokerError(f"{queue.topic}:{queue.broker}:{queue.queue_id}: message {queue.message_id} is gone from "
                          f"offset {queue.consume_offset} (expired?); nothing was copied")
    target = queue.dead_letter_topic
    if admin.topic_exists(target):
        broker, queue_id = admin.queues(target)[0]
    else:
        admin.create_topic(target, 1)  # as the broker creates %DLQ%<group> for its first dead letter
        broker, queue_id = sorted(admin.brokers())[0], 0
    _record(ledger, queue.message_id, "copying", run_id, topic=target,
            **{"from": admin.max_offset(target, broker, queue_id)})
    properties = {k: v for k, v in message.properties.items() if k not in _STORE_PROPERTIES}
    properties.update({DRAINED_FROM: queue.message_id, "RETRY_TOPIC": queue.topic,
                       "ORIGIN_MESSAGE_ID": message.msg_id})
    copy = admin.send(target, message.body, properties, broker, queue_id, producer_group=group,
                      reconsume_times=message.reconsume_times)
    _record(ledger, queue.message_id, "copied", run_id, copy=copy.offset_msg_id, topic=target)
    return {"message_id": queue.message_id, "copy": copy.offset_msg_id, "topic": target, "already_present": False}


# --- observe -------------------------------------------------------------------------------------

def _in_scope(progress: list[QueueProgress], topics: list[str]) -> dict[QueueKey, QueueProgress]:
    return {(p.topic, p.broker, p.queue_id): p for p in progress
            if (p.topic in topics if topics else not p.topic.startswith(("%RETRY%", "%DLQ%")))
            and p.consumer_offset >= 0}


def _check(admin: RocketMQAdmin, params: DrainStuckParameters) -> None:
    problems = []
    if params.group not in admin.groups() and not admin.progress(params.group):
        problems.append(("group", f"{params.group!r} is not a consumer group of rocketmq cluster {admin.name!r}"))
    problems += [("topic", f"{t!r} is not a topic of rocketmq cluster {admin.name!r}")
                 for t in params.topic if not admin.topic_exists(t)]
    if problems:
        raise ParameterError(RUNBOOK_ID, problems)


def _shown(body: bytes, show: bool) -> str:
    if not show:
        return REDACTED
    text = body.decode("utf-8", errors="replace").replace("\n", " ")
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(body)} bytes)"


def stuck_queue(admin: RocketMQAdmin, params: DrainStuckParameters, p: QueueProgress, ledger: Path) -> StuckQueue | None:
    """The queue with the message at its consume offset (None when that message is gone)."""
    message = admin.read_message(p.topic, p.broker, p.queue_id, p.consumer_offset)
    if message is None:
        return None
    target = params.dead_letter_topic or dlq_topic(params.group)
    queue = StuckQueue(p.topic, p.broker, p.queue_id, p.consumer_offset, p.broker_offset, message.offset_msg_id,
                       message.msg_id, message.keys, message.tag, len(message.body), message.reconsume_times,
                       message.stored_ms, _shown(message.body, params.show_values), target)
    earlier = _copied_before(admin, ledger_states(ledger).get(queue.message_id), target)
    return replace(queue, copied_before=earlier)


def observe(admin: RocketMQAdmin, params: DrainStuckParameters, ledger: Path,
            sleep: Callable[[float], None] = time.sleep) -> DrainPlan:
    """Sample the group's queues twice, `sample_ms` apart, and plan for the stuck ones (nothing changes)."""
    _check(admin, params)
    first = _in_scope(admin.progress(params.group), params.topic)
    sleep(params.sample_ms / 1000)
    second = _in_scope(admin.progress(params.group), params.topic)
    online = tuple(admin.consumer_clients(params.group))
    candidates = [p for key, p in sorted(second.items()) if online and key in first and p.diff > 0
                  and first[key].consumer_offset == p.consumer_offset]
    queues, notes = [], []
    for p in candidates[:params.limit]:
        queue = stuck_queue(admin, params, p, ledger)
        if queue is None:
            notes.append(f"{p.topic}:{p.broker}:{p.queue_id}: no message at consume offset {p.consumer_offset} "
                         "(expired or below the queue's min offset): left alone")
        else:
            queues.append(queue)
    if params.limit is not None and len(candidates) > params.limit:
        notes.append(f"{len(candidates) - params.limit} more stuck queue(s) left for a later run (limit={params.limit})")
    return DrainPlan(admin.name, params.group, params.sample_ms, len(second), online, tuple(queues), tuple(notes))


def refresh(admin: RocketMQAdmin, params: DrainStuckParameters, approved: DrainPlan, ledger: Path) -> DrainPlan:
    """The approved plan read again without sampling: a queue whose consume offset moved since is no
    longer stuck and drops out (the gate then asks again)."""
    now = {(p.topic, p.broker, p.queue_id): p for p in admin.progress(approved.group)}
    queues, notes = [], list(approved.notes)
    for q in approved.queues:
        p = now.get(q.key)
        if p is None or p.consumer_offset != q.consume_offset:
            notes.append(f"{q.topic}:{q.broker}:{q.queue_id} moved on since the plan (consume offset "
                         f"{q.consume_offset} -> {p.consumer_offset if p else 'none'}): left alone")
            continue
        queue = stuck_queue(admin, params, p, ledger)
        if queue is not None:
            queues.append(queue)
    return replace(approved, online=tuple(admin.consumer_clients(approved.group)), queues=tuple(queues),
                   notes=tuple(notes))
