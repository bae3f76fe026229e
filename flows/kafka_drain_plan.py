"""What kafka-drain-stuck observes and plans (plain Python, no Prefect): which partitions of a
consumer group are stuck, the record each is stuck on, and what the run would change.

A partition is stuck when, in two samples `stuck_after` seconds apart, a member of the group has it
assigned, its lag is above zero, and its committed offset did not move. The remedy per partition:
copy the record at the committed offset to a dead-letter topic, then commit the offset one past it.

`observe` samples and plans; `refresh` plans again from an approved plan without waiting (the
re-plan after approval, once the consumers are stopped: nothing is "stuck" in an empty group).
`DrainPlan` implements the kit's plan contract (mq_runbooks.kit.plans.Plan).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.integrations.kafka import ConsumerGroup, KafkaClient, UnknownTopicError
from mq_runbooks.integrations.kafka_records import HEADER_PREFIX, KafkaRecord, KafkaRecords, dead_letter_partition
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, PlanTable, table_json, table_markdown

RUNBOOK_ID = "kafka-drain-stuck"
SHOWN_CHARS = 120
REDACTED = "(redacted: show_values=true shows it)"
OBSERVED_ROWS_KEPT = 200  # the journal keeps this many observed partitions; the counts cover all


class DrainStuckParameters(BaseModel):
    """Parameters of kafka-drain-stuck."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster: str = Field(description="a Kafka cluster named in clusters.yaml, e.g. primary")
    group: str = Field(min_length=1, description="the consumer group id")
    topic: list[str] = Field(default_factory=list,
                             description="topics to look at (repeatable); none = every topic the group consumes")
    stuck_after: float = Field(30, ge=1, le=3600,
                               description="seconds between the two samples: a committed offset that did not "
                                           "move for this long, with lag and an assigned member, is stuck")
    dead_letter_topic: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="where stuck records are copied (default <topic>.dlt); created if missing")
    show_values: bool = Field(False, description="true: show record values in the plan and journal (else redacted)")
    mode: Literal["drain", "report"] = Field("drain", description="drain: copy and skip the record; report: "
                                                                  "only report, change nothing")
    wait_for_inactive: float = Field(300, ge=0, le=3600,
                                     description="seconds to wait, after approval, for the consumers to be stopped")


@dataclass(frozen=True)
class StuckRecord:
    """The record a partition is stuck on, as people may see it: the value only when allowed."""

    offset: int
    key: str | None
    headers: tuple[tuple[str, str], ...]
    key_bytes: int
    value_bytes: int
    timestamp: str | None
    value: str


@dataclass(frozen=True)
class StuckPartition:
    topic: str
    partition: int
    committed_offset: int
    log_end_offset: int
    held_by: tuple[str, ...]  # client ids of the members it is assigned to
    record: StuckRecord
    dead_letter_topic: str
    dead_letter_partition: int
    dead_letter_exists: bool

    @property
    def lag(self) -> int:
        return self.log_end_offset - self.committed_offset

    @property
    def target_offset(self) -> int:
        return self.record.offset + 1


@dataclass(frozen=True)
class DrainPlan(PlanTable):
    cluster: str
    group: str
    mode: str
    state: str
    members: tuple[str, ...]
    stuck_after: float
    wait_for_inactive: float
    observed: tuple[dict[str, Any], ...]
    partitions: tuple[StuckPartition, ...]  # in topic, partition order
    missing: tuple[str, ...] = ()  # the group, when the cluster does not know it

    COLUMNS = ("topic", "partition", "committed", "log end", "lag", "record offset", "key", "headers",
               "value bytes", "timestamp", "value", "dead-letter topic", "new offset")
    KEY_COLUMNS = ("topic", "partition")
    INTENT_COLUMNS = ("committed", "record offset", "dead-letter topic", "new offset")  # log end and lag move on

    # -- the plan contract (mq_runbooks.kit.plans.Plan) ------------------------------------------
    def digest(self) -> str:
        """What an approval is bound to: the partitions, their offsets, the records and where they go."""
        core = [self.group, [(p.topic, p.partition, p.committed_offset, p.record.offset, p.dead_letter_topic,
                              p.dead_letter_partition) for p in self.partitions]]
        return hashlib.sha256(json.dumps(core).encode()).hexdigest()

    def summary(self) -> str:
        if self.missing:
            return f"nothing to plan: {'; '.join(self.missing)}"
        stuck = f"{len(self.partitions)} of {len(self.observed)} observed partition(s) of {self.group} stuck"
        if not self.partitions or self.mode == "report":
            return stuck
        return f"{stuck}: copy each stuck record to the dead-letter topic and commit the offset one past it"

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        """One row per stuck partition, as people read it (the value only when show_values allowed it)."""
        return [(p.topic, p.partition, p.committed_offset, p.log_end_offset, p.lag, p.record.offset,
                 _cell(p.record.key), _cell(", ".join(f"{name}={value}" for name, value in p.record.headers) or None),
                 p.record.value_bytes, p.record.timestamp or "none", _cell(p.record.value),
                 f"{p.dead_letter_topic}:{p.dead_letter_partition}{'' if p.dead_letter_exists else ' (created)'}",
                 p.target_offset) for p in self.partitions]

    def changes_anything(self) -> bool:
        return bool(self.partitions)

    def missing_targets(self) -> tuple[str, ...]:
        return self.missing

    def to_csv(self) -> str:
        """The offsets after the run, in the `kafka-consumer-groups.sh --export` format."""
        return "".join(f"{p.topic},{p.partition},{p.target_offset}\n" for p in self.partitions)

    def to_json(self) -> dict[str, Any]:
        # `current`/`target`/`log_end` name the offsets as kafka-replay's plan does: the postmortem's lag reads them.
        return {
            **table_json(self),
            "cluster": self.cluster, "group": self.group, "mode": self.mode, "state": self.state,
            "members": list(self.members), "stuck_after_s": self.stuck_after,
            "partitions": [{
                "topic": p.topic, "partition": p.partition, "committed": p.committed_offset,
                "current": p.committed_offset,
                "log_end": p.log_end_offset, "lag": p.lag, "held_by": list(p.held_by), "target": p.target_offset,
                "record": {"offset": p.record.offset, "key": p.record.key, "headers": dict(p.record.headers),
                           "key_bytes": p.record.key_bytes, "value_bytes": p.record.value_bytes,
                           "timestamp": p.record.timestamp, "value": p.record.value},
                "dead_letter_topic": p.dead_letter_topic, "dead_letter_partition": p.dead_letter_partition,
                "dead_letter_exists": p.dead_letter_exists,
            } for p in self.partitions],
        }

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        """What is stuck, what the run does about it, and what people must do."""
        return table_markdown(self.headline(), self.COLUMNS, self.rows(), rows)

    def headline(self) -> str:
        lines = [f"**Group** `{self.group}` on Kafka cluster `{self.cluster}` ({self.state}, {len(self.members)} "
                 f"member(s)): **{len(self.partitions)}** of {len(self.observed)} observed partition(s) stuck "
                 f"(an assigned member, lag above zero, a committed offset that did not move in "
                 f"{self.stuck_after:g} s)."]
        if self.missing:
            return "\n".join(lines + ["", f"Not found: {'; '.join(self.missing)}. Nothing will change."])
        if not self.partitions:
            return "\n".join(lines + ["", "Nothing is stuck: nothing will change."])
        remedy = (f"copy the record at the committed offset to the dead-letter topic (headers "
                  f"`{HEADER_PREFIX}topic`, `.partition`, `.offset`, `.group` say where it came from), then commit "
                  "the offset one past it: the group skips that one record, which is kept in the dead-letter topic.")
        if self.mode == "report":
            lines += ["", "**Report only** (mode=report): nothing will be changed. "
                      f"With mode=drain, per partition: {remedy}"]
        else:
            members = "\n".join(f"  - {member}" for member in self.members) or "  (none listed)"
            lines += ["", f"Remedy, per stuck partition: {remedy}", "",
                      f"**The consumers of `{self.group}` must be stopped first:** Kafka moves a group's committed "
                      f"offsets only when the group is empty. After approval this run waits up to "
                      f"{self.wait_for_inactive:g} s for the group to become empty. Stop these member(s):\n"
                      f"{members}\nStart them again once the run has finished: they resume one record past each "
                      "stuck record."]
        return "\n".join(lines)


def _cell(text: str | None) -> str:
    """A table cell: "none" for nothing, on one line (table_markdown escapes the pipes)."""
    return "none" if text is None else text.replace("\n", " ")


# --- observation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Sample:
    group: ConsumerGroup
    committed: dict[tuple[str, int], int]
    log_end: dict[tuple[str, int], int]

    def assigned(self) -> dict[tuple[str, int], list[str]]:
        holders: dict[tuple[str, int], list[str]] = {}
        for member in self.group.members:
            for key in member.assignment:
                holders.setdefault(key, []).append(member.client_id)
        return holders


def observe(kafka: KafkaClient, records: KafkaRecords, params: DrainStuckParameters, cluster: str,
            sleep=time.sleep) -> DrainPlan:
    """Sample the group twice, `stuck_after` seconds apart, and plan for the partitions stuck in both.

    A group the cluster does not know is planned at once as a missing target (nothing else); a topic the
    cluster does not have, or one the group does not consume, is a ParameterError (before any waiting)."""
    group, committed = kafka.describe_group(params.group), kafka.committed_offsets(params.group)
    missing = _missing_group(kafka, group, committed, cluster)
    if missing:
        return DrainPlan(cluster, params.group, params.mode, "Dead", (), params.stuck_after, params.wait_for_inactive,
                         (), (), (missing,))
    in_scope = _scope(kafka, params, group, committed)
    first = _sample(kafka, params.group, in_scope)
    sleep(params.stuck_after)
    second = _sample(kafka, params.group, in_scope)
    observed, stuck = [], []
    assigned_first, assigned_second = first.assigned(), second.assigned()
    for key in sorted(set(first.committed) | set(second.committed) | set(assigned_second)):
        before, now, log_end = first.committed.get(key), second.committed.get(key), second.log_end.get(key)
        is_stuck = (key in assigned_first and key in assigned_second and before is not None and before == now
                    and log_end is not None and log_end > now and first.log_end.get(key, 0) > before)
        observed.append({"topic": key[0], "partition": key[1], "committed_before": before, "committed_after": now,
                         "log_end": log_end, "assigned_to": assigned_second.get(key, []), "stuck": is_stuck})
        if is_stuck:
            stuck.append((key, now, log_end, tuple(assigned_second[key])))
    topics = kafka.list_topics()
    partitions = []
    for (topic, partition), committed, log_end, held_by in stuck:
        record = records.read_record(topic, partition, committed)
        dead_letter = params.dead_letter_topic or f"{topic}.dlt"
        count = topics.get(dead_letter) or topics[topic]  # a created one gets the source's partition count
        partitions.append(StuckPartition(
            topic, partition, committed, log_end, held_by, _shown(record, params.show_values), dead_letter,
            dead_letter_partition(partition, count), dead_letter in topics))
    return DrainPlan(cluster, params.group, params.mode, second.group.state, _members(second.group),
                     params.stuck_after, params.wait_for_inactive, tuple(observed), tuple(partitions))


def refresh(kafka: KafkaClient, plan: DrainPlan) -> DrainPlan:
    """The plan again, now (no waiting): partitions whose committed offset moved meanwhile are dropped
    (they are not stuck any more) and the dead-letter partitions follow the topics as they are now."""
    committed = kafka.committed_offsets(plan.group)
    group = kafka.describe_group(plan.group)
    topics = kafka.list_topics()
    kept = []
    for p in plan.partitions:
        if committed.get((p.topic, p.partition)) != p.committed_offset:
            continue
        count = topics.get(p.dead_letter_topic) or topics.get(p.topic, 1)
        kept.append(replace(p, dead_letter_partition=dead_letter_partition(p.partition, count),
                            dead_letter_exists=p.dead_letter_topic in topics))
    return replace(plan, state=group.state, members=_members(group), partitions=tuple(kept))


def _missing_group(kafka: KafkaClient, group: ConsumerGroup, committed: dict[tuple[str, int], int],
                   cluster: str) -> str | None:
    """How to name the group as a missing target when the cluster has no trace of it, else None."""
    if group.state != "Dead" or group.members or committed:
        return None
    close = difflib.get_close_matches(group.group_id, [name for name, _ in kafka.list_groups()], n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"group {group.group_id!r} on kafka cluster {cluster!r} (no committed offsets and no members{hint})"


def _scope(kafka: KafkaClient, params: DrainStuckParameters, group: ConsumerGroup,
           committed: dict[tuple[str, int], int]) -> set[str] | None:
    """The topics to look at (None: all the group consumes), checked against the cluster."""
    consumed = {t for t, _ in committed} | {t for m in group.members for t, _ in m.assignment}
    problems = []
    for topic in params.topic:
        try:
            kafka.partitions(topic)
        except UnknownTopicError as exc:
            problems.append(("topic", str(exc)))
            continue
        if topic not in consumed:
            problems.append(("topic", f"group {params.group!r} neither has committed offsets on nor is assigned "
                                      f"topic {topic!r} (it consumes: {', '.join(sorted(consumed)) or 'nothing'})"))
    if params.dead_letter_topic is not None and params.dead_letter_topic in (set(params.topic) or consumed):
        problems.append(("dead_letter_topic", f"{params.dead_letter_topic!r} is a topic the group consumes; "
                                              "name another topic"))
    if problems:
        raise ParameterError(RUNBOOK_ID, problems)
    return set(params.topic) or None


def _sample(kafka: KafkaClient, group: str, topics: set[str] | None) -> _Sample:
    described = kafka.describe_group(group)
    committed = {k: o for k, o in kafka.committed_offsets(group).items() if topics is None or k[0] in topics}
    assigned = {k for m in described.members for k in m.assignment if topics is None or k[0] in topics}
    keys = sorted(set(committed) | assigned)
    ends = {k: o.log_end_offset for k, o in kafka.log_offsets(keys).items()} if keys else {}
    return _Sample(described, committed, ends)


def _members(group: ConsumerGroup) -> tuple[str, ...]:
    return tuple(f"{m.client_id} on {m.host} (member {m.member_id}): "
                 + (", ".join(f"{t}:{p}" for t, p in m.assignment) or "no partitions") for m in group.members)


def _shown(record: KafkaRecord, show_values: bool) -> StuckRecord:
    value = _text(record.value) if show_values else f"{REDACTED}, {record.value_bytes} bytes"
    return StuckRecord(record.offset, _text(record.key) if record.key is not None else None,
                       tuple((name, _text(value_) or "") for name, value_ in record.headers), record.key_bytes,
                       record.value_bytes, record.timestamp.isoformat() if record.timestamp else None, value or "")


def _text(data: bytes | None) -> str | None:
    """Bytes as people can read them: UTF-8 text, else hex; cut to SHOWN_CHARS."""
    if data is None:
        return None
    try:
        text = data.decode()
        if not re.search(r"[\x00-\x08\x0e-\x1f]", text):
            return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(data)} bytes)"
    except UnicodeDecodeError:
        pass
    shown = data[: SHOWN_CHARS // 2].hex()
    return f"0x{shown}" + (f"... ({len(data)} bytes)" if len(data) > SHOWN_CHARS // 2 else "")
