"""The planning core of the `kafka-replay` runbook: `kafka-consumer-groups.sh --reset-offsets`, in Python.

    spec = spec_from_parameters(to_datetime="2024-05-01T13:45:00.000Z")   # mq_runbooks.flows.replay_spec
    plan = plan_replay(kafka, "billing", spec, topics=["orders:0,2"])
    plan.messages_replayed, plan.to_csv(), plan.digest()

The plan means what the Java tool's options mean (ConsumerGroupCommand, Kafka 4.1): the same scope
rules, clamping into [log start, log end], fall-backs and errors, and `to_csv()` prints the bytes
`--dry-run --export` prints. The spec and its parsers live in mq_runbooks.flows.replay_spec.
Plain Python: the Prefect flow around it lives elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.java_order import JavaHashMap, java_string_hash
from mq_runbooks.flows.replay_spec import (
    RUNBOOK, ByDuration, FromFile, ShiftBy, Spec, ToCurrent, ToDatetime, ToEarliest, ToLatest, ToOffset, TopicScope,
    invalid, iso, parse_scope,
)
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, table_json, table_markdown
from mq_runbooks.integrations.kafka import KafkaClient, TopicPartitionKey, UnknownTopicError

__all__ = ["PartitionPlan", "ReplayPlan", "plan_replay"]

# -- the plan ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PartitionPlan:
    topic: str
    partition: int
    current_offset: int | None  # the group's committed offset; None when it has none
    target_offset: int
    log_start_offset: int
    log_end_offset: int

    @property
    def replayed(self) -> int | None:
        """Messages consumed again (current - target); negative: messages skipped; None: no current."""
        return None if self.current_offset is None else self.current_offset - self.target_offset


@dataclass(frozen=True)
class ReplayPlan:
    """What a reset would commit. `partitions` are in the order `--export` prints them (a Java
    HashMap's order): sort them for display."""

    group: str
    spec_description: str
    partitions: tuple[PartitionPlan, ...]
    warnings: tuple[str, ...] = ()
    cluster: str = ""

    # -- the plan contract (mq_runbooks.kit.plans.Plan) ------------------------------------------
    COLUMNS = ("topic", "partition", "current", "target", "log start", "log end", "replayed (+) / skipped (-)")
    KEY_COLUMNS = ("topic", "partition")
    INTENT_COLUMNS = ("target",)  # the rest is observed: it moves by itself while the gate waits

    def columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def rows(self) -> list[tuple]:
        """One row per partition, in topic/partition order (people read these; the CSV keeps Java's)."""
        return [(p.topic, p.partition, p.current_offset, p.target_offset, p.log_start_offset, p.log_end_offset,
                 None if p.replayed is None else f"{p.replayed:+d}")
                for p in sorted(self.partitions, key=lambda p: (p.topic, p.partition))]

    def changes_anything(self) -> bool:
        return any(p.current_offset != p.target_offset for p in self.partitions)

    def missing_targets(self) -> tuple[str, ...]:
        return ()  # unknown topics and partitions are refused by plan_replay itself

    def summary(self) -> str:
        changed = sum(p.current_offset != p.target_offset for p in self.partitions)
        return (f"{changed} of {len(self.partitions)} partition(s) of {self.group} change: "
                f"{self.messages_replayed} message(s) replayed, {self.messages_skipped} skipped")

    def markdown(self, rows: int = PLAN_ROWS_SHOWN) -> str:
        where = f" on Kafka cluster `{self.cluster}`" if self.cluster else ""
        changed = sum(p.current_offset != p.target_offset for p in self.partitions)
        headline = (f"**Group** `{self.group}`{where}: reset {self.spec_description}.\n"
                    f"**{changed}** of {len(self.partitions)} partition(s) change; "
                    f"**{self.messages_replayed}** message(s) will be consumed again, "
                    f"**{self.messages_skipped}** skipped.")
        shown = self.rows()
        if len(shown) > rows:  # cut short (the gate, Slack): the largest moves first
            shown = sorted(shown, key=lambda row: -abs(int(row[6] or 0)))
            headline += f" The {rows} largest moves are shown first."
        table = [tuple("none" if value is None and index == 2 else value for index, value in enumerate(row))
                 for row in shown]
        return table_markdown(headline, self.COLUMNS, table, rows, self.warnings)

    def to_json(self) -> dict:
        return {**table_json(self), "cluster": self.cluster, "group": self.group, "spec": self.spec_description,
                "messages_replayed": self.messages_replayed, "messages_skipped": self.messages_skipped,
                "warnings": list(self.warnings),
                "partitions": [{"topic": p.topic, "partition": p.partition, "current": p.current_offset,
                                "target": p.target_offset, "log_start": p.log_start_offset,
                                "log_end": p.log_end_offset, "replayed": p.replayed} for p in self.partitions]}

    @property
    def messages_replayed(self) -> int:
        return sum(p.replayed for p in self.partitions if p.replayed is not None and p.replayed > 0)

    @property
    def messages_skipped(self) -> int:
        return sum(-p.replayed for p in self.partitions if p.replayed is not None and p.replayed < 0)

    def target_offsets(self) -> dict[TopicPartitionKey, int]:
        """(topic, partition) -> the offset to commit: what `alter_group_offsets` takes."""
        return {(p.topic, p.partition): p.target_offset for p in self.partitions}

    def to_csv(self) -> str:
        """Exactly what `kafka-consumer-groups --reset-offsets --dry-run --export` prints to stdout
        for a single group: `topic,partition,offset` lines, then the blank line of its println.
        (For time specs the Java tool also prints its "Warn: ... Falling back" lines before them.)"""
        return "".join(f"{p.topic},{p.partition},{p.target_offset}\n" for p in self.partitions) + "\n"

    def digest(self) -> str:
        """sha256 of the cluster, the group and each partition's target offset, in sorted order: the
        intent. An approval bound to it is void when a re-plan would commit something else; current
        offsets, log ends and counts are observations (drift), not part of it."""
        rows = sorted([p.topic, p.partition, p.target_offset] for p in self.partitions)
        canonical = json.dumps({"cluster": self.cluster, "group": self.group, "partitions": rows},
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def plan_replay(
    kafka: KafkaClient, group: str, spec: Spec, topics: list[str] | None = None, now_ms: int | None = None
) -> ReplayPlan:
    """Compute the offsets `--reset-offsets` would commit for `group`, without changing anything.

    Scope: `topics` (`t` or `t:0,1`), else every partition the group has committed offsets for;
    `FromFile` names its own partitions. Raises ParameterError for unknown topics or partitions,
    an empty scope, or `ShiftBy` on partitions without a committed offset. A group with members
    is planned anyway, with a warning: the offsets can only be applied once it is Empty.
    """
    if not group:
        raise invalid("group", "must not be empty")
    described = kafka.describe_group(group)
    committed = kafka.committed_offsets(group)
    warnings = []
    if not described.is_inactive:
        warnings.append(
            f"group {group!r} is {described.state} with {len(described.members)} member(s): the offsets can "
            f"only be applied once it is Empty (stop its consumers)"
        )
    if isinstance(spec, FromFile):
        if topics:
            raise invalid("topic", "from_file names its own partitions: leave topic empty")
        scope = _resolve_scope(kafka, [TopicScope(t, (p,)) for t, p, _ in spec.rows], "from_file")
    elif topics:
        scope = _resolve_scope(kafka, parse_scope(topics), "topic")
    else:
        scope = list(committed)  # the coordinator's order, which the Java tool starts from too
        if not scope:
            raise invalid("topic", f"group {group!r} has no committed offsets on kafka cluster {kafka.name!r}: "
                                    f"name the topics to reset with topic=t or topic=t:0,1")
    logs = kafka.log_offsets(scope)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    targets = _targets(kafka, spec, scope, committed, logs, warnings, now_ms)
    if isinstance(spec, ToCurrent):
        # Committed partitions first, then the log ends, which pass through two HashMaps before
        # putAll adds them; putAll into a map without a table yet pre-sizes it: another order.
        without = JavaHashMap().put_all(k for k in scope if k not in committed).keys()
        without = JavaHashMap().put_all(without).keys()
        order = JavaHashMap().put_all(k for k in scope if k in committed).put_all(without, bulk=True).keys()
    else:  # collected into a HashMap, and again into new ones of the same size: the same order
        order = JavaHashMap().put_all(scope).keys()
    description = spec.describe()
    if isinstance(spec, ByDuration):
        description += f" (records since {iso(now_ms - spec.duration_ms)})"
    return ReplayPlan(group, description, tuple(
        PartitionPlan(t, p, committed.get((t, p)), targets[(t, p)], logs[(t, p)].log_start_offset,
                      logs[(t, p)].log_end_offset)
        for t, p in order
    ), tuple(warnings))


def _targets(kafka, spec, scope, committed, logs, warnings, now_ms) -> dict[TopicPartitionKey, int]:
    """The offset prepareOffsetsToReset picks for each partition; appends a warning per adjustment."""
    def clamp(key: TopicPartitionKey, offset: int) -> int:
        start, end = logs[key].log_start_offset, logs[key].log_end_offset
        if offset > end:
            warnings.append(f"{key[0]}:{key[1]}: offset {offset} is past the log end {end}: using {end}")
        elif offset < start:
            warnings.append(f"{key[0]}:{key[1]}: offset {offset} is before the log start {start}: using {start}")
        return min(max(offset, start), end)

    match spec:
        case ToEarliest():
            return {k: logs[k].log_start_offset for k in scope}
        case ToLatest():
            return {k: logs[k].log_end_offset for k in scope}
        case ToCurrent():
            return {k: committed.get(k, logs[k].log_end_offset) for k in scope}
        case ToOffset(offset=offset):
            return {k: clamp(k, offset) for k in scope}
        case FromFile(rows=rows):
            return {(t, p): clamp((t, p), o) for t, p, o in rows}
        case ShiftBy(shift=shift):
            missing = [f"{t}:{p}" for t, p in scope if (t, p) not in committed]
            if missing:
                raise invalid("shift_by", f"cannot shift {', '.join(missing[:10])}"
                               f"{' ...' if len(missing) > 10 else ''}: the group has no committed offset there "
                               f"(use to_offset, to_datetime or to_earliest, or leave them out of topic)")
            return {k: clamp(k, committed[k] + shift) for k in scope}
        case ToDatetime() | ByDuration():
            timestamp = spec.timestamp_ms if isinstance(spec, ToDatetime) else now_ms - spec.duration_ms
            found = kafka.offsets_for_timestamp(scope, timestamp)
            for key in (k for k in scope if found[k] < 0):
                warnings.append(f"{key[0]}:{key[1]}: no record at or after {iso(timestamp)}: "
                                f"using the log end {logs[key].log_end_offset}")
            return {k: found[k] if found[k] >= 0 else logs[k].log_end_offset for k in scope}
    raise TypeError(f"not a reset spec: {spec!r}")


def _resolve_scope(kafka: KafkaClient, scopes: list[TopicScope], field: str) -> list[TopicPartitionKey]:
    """The partitions named, in the order parseTopicPartitionsToReset yields them: the listed
    partitions in parameter order, then whole topics in describeTopics' HashMap order."""
    problems, partitions_of = [], {}
    for topic in dict.fromkeys(s.topic for s in scopes):
        try:
            partitions_of[topic] = kafka.partitions(topic)
        except UnknownTopicError as exc:
            problems.append((field, str(exc)))
    listed = [(s.topic, p) for s in scopes if s.partitions is not None and s.topic in partitions_of
              for p in s.partitions]
    problems += [(field, f"{t}:{p} does not exist: {t} has partitions 0-{len(partitions_of[t]) - 1}")
                 for t, p in listed if p not in partitions_of[t]]
    if problems:
        raise ParameterError(RUNBOOK, problems)
    whole = [s.topic for s in scopes if s.partitions is None]
    # adminClient.describeTopics: HashMap(n) of the names, copied, then collected into HashMap(n).
    names = JavaHashMap(len(whole), java_string_hash).put_all(whole)
    names = JavaHashMap(None, java_string_hash).put_all(names.keys(), bulk=True)
    names = JavaHashMap(len(whole), java_string_hash).put_all(names.keys())
    return listed + [(topic, p) for topic in names.keys() for p in partitions_of[topic]]
