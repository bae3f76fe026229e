"""The planning core of the `kafka-replay` runbook: `kafka-consumer-groups.sh --reset-offsets`, in Python.

    spec = spec_from_parameters(to_datetime="2024-05-01T13:45:00.000Z")
    plan = plan_replay(kafka, "billing", spec, topics=["orders:0,2"])
    plan.messages_replayed, plan.to_csv(), plan.digest()

Parameters mean what the Java tool's options mean (ConsumerGroupCommand, Kafka 4.1): the same
scope rules, clamping into [log start, log end], fall-backs and errors, and `to_csv()` prints the
bytes `--dry-run --export` prints. Bad parameters raise ParameterError naming every invalid field.
Plain Python: the Prefect flow around it lives elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Union

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.java_order import JavaHashMap, java_string_hash
from mq_runbooks.kit.plans import PLAN_ROWS_SHOWN, table_json, table_markdown
from mq_runbooks.integrations.kafka import KafkaClient, TopicPartitionKey, UnknownTopicError

__all__ = [
    "ByDuration", "FromFile", "PartitionPlan", "ReplayPlan", "ShiftBy", "Spec", "ToCurrent", "ToDatetime",
    "ToEarliest", "ToLatest", "ToOffset", "TopicScope", "parse_datetime", "parse_duration",
    "parse_offsets_csv", "parse_scope", "plan_replay", "spec_from_parameters",
]

RUNBOOK = "kafka-replay"
DATETIME_HINT = "write yyyy-MM-ddTHH:mm:ss.SSS with an optional zone (Z, +01:00); no zone means UTC"


def _invalid(field: str, message: str) -> ParameterError:
    return ParameterError(RUNBOOK, [(field, message)])


# -- parameters --------------------------------------------------------------------------------

# What Utils.getDateTime parses with the same meaning; it also takes one-digit fields, ".5" as
# 5 ms, "+0130" as +01:00 and trailing junk, which we refuse rather than guess.
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})(?:(Z)|([+-])(\d{2})(?::(\d{2}))?)?"
)


def parse_datetime(text: str, *, field: str = "to_datetime") -> int:
    """Epoch milliseconds of `text`, read as `kafka-consumer-groups --to-datetime` reads it.

    `2024-05-01T13:45:00.000` (UTC), `2024-05-01T13:45:00.000Z`, `...000+02:00`, `...000-05`.
    """
    stripped = text.strip() if isinstance(text, str) else ""
    match = _DATETIME.fullmatch(stripped)
    if match is None:
        if re.fullmatch(r".*T\d{2}:\d{2}:\d{2}(Z|[+-].*)?", stripped):
            raise _invalid(field, f"{text!r} has no milliseconds: the Java tool needs them too; {DATETIME_HINT}")
        if re.search(r"[+-]\d{4}$", stripped):
            raise _invalid(field, f"{text!r}: write the zone as +hh:mm (the Java tool reads +0130 as +01:00)")
        raise _invalid(field, f"{text!r} is not a date and time; {DATETIME_HINT}, e.g. 2024-05-01T13:45:00.000Z")
    year, month, day, hour, minute, second, milli, _z, sign, zone_h, zone_m = match.groups()
    offset = timedelta(hours=int(zone_h or 0), minutes=int(zone_m or 0)) * (-1 if sign == "-" else 1)
    # Java's calendar refuses zone offsets outside -13:00..+14:00 and re-reads them as whole hours.
    if not timedelta(hours=-13) <= offset <= timedelta(hours=14) or int(zone_m or 0) > 59:
        raise _invalid(field, f"{text!r}: the zone offset must lie between -13:00 and +14:00")
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          int(milli) * 1000, tzinfo=timezone(offset))
    except ValueError as exc:
        raise _invalid(field, f"{text!r} is not a valid date and time ({exc}); {DATETIME_HINT}")
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


# java.time.Duration.parse: PnDTnHnMn.nS, case-insensitive, signs allowed on every number.
_DURATION = re.compile(
    r"([-+]?)P(?:([-+]?\d+)D)?(?:T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?",
    re.IGNORECASE,
)


def parse_duration(text: str, *, field: str = "by_duration") -> int:
    """Milliseconds in an ISO-8601 duration as java.time.Duration reads it: `PT15M`, `P1DT2H`, `PT1.5S`.

    Negative durations, which the Java tool accepts and which reach into the future (so every
    partition falls back to its log end), are refused.
    """
    stripped = text.strip() if isinstance(text, str) else ""
    match = _DURATION.fullmatch(stripped)
    if match is None or stripped.upper().endswith("T") or not any(match.group(i) for i in (2, 3, 4, 5)):
        raise _invalid(field, f"{text!r} is not an ISO-8601 duration PnDTnHnMnS, e.g. PT15M, PT2H30M, P1D")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    nanos = ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes or 0)) * 60 * 10**9
    fraction_nanos = int((fraction or "").ljust(9, "0"))
    nanos += int(seconds or 0) * 10**9 + (-fraction_nanos if (seconds or "").startswith("-") else fraction_nanos)
    nanos = -nanos if sign == "-" else nanos
    if nanos < 0:
        raise _invalid(field, f"{text!r} is negative: give how far back to go, e.g. PT15M")
    return nanos // 10**6


@dataclass(frozen=True)
class TopicScope:
    """One `topic` parameter: a whole topic (`partitions` None) or some of its partitions."""

    topic: str
    partitions: tuple[int, ...] | None = None


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def parse_scope(topics: Iterable[str], *, field: str = "topic") -> list[TopicScope]:
    """Parse `topic` parameters: `orders` (every partition) or `orders:0,1,2` (those partitions).

    Every invalid item is named in one ParameterError; a partition named twice is refused (the
    Java tool fails on it with "Duplicate key").
    """
    problems: list[tuple[str, str]] = []
    scopes: list[TopicScope] = []
    whole: dict[str, str] = {}  # topic -> the item that named all of it
    named: dict[TopicPartitionKey, str] = {}  # (topic, partition) -> the item that named it
    for item in topics:
        topic, colon, partition_list = (part.strip() for part in str(item).partition(":"))
        if not _TOPIC_NAME.fullmatch(topic) or topic in {".", ".."}:
            problems.append((field, f"{item!r}: {topic!r} is not a topic name (letters, digits, '.', '_', '-')"))
            continue
        if not colon:
            prior = whole.get(topic) or next((v for (t, _), v in named.items() if t == topic), None)
            if prior:
                problems.append((field, f"{topic} is named twice ({prior!r} and {item!r})"))
            whole.setdefault(topic, str(item))
            scopes.append(TopicScope(topic))
            continue
        parts = [p.strip() for p in partition_list.split(",")]
        if not all(p.isdigit() for p in parts):
            problems.append((field, f"{item!r}: partitions must be numbers separated by commas, e.g. {topic}:0,1,2"))
            continue
        for partition in map(int, parts):
            prior = whole.get(topic) or named.get((topic, partition))
            if prior:
                problems.append((field, f"{topic}:{partition} is named twice ({prior!r} and {item!r})"))
            named.setdefault((topic, partition), str(item))
        scopes.append(TopicScope(topic, tuple(map(int, parts))))
    if problems:
        raise ParameterError(RUNBOOK, problems)
    return scopes


def parse_offsets_csv(text: str, *, field: str = "from_file") -> dict[TopicPartitionKey, int]:
    """Offsets from `topic,partition,offset` lines, as `--export` writes them, in file order.

    Blank lines and a `topic,partition,offset` header are skipped. Errors name their line numbers.
    """
    offsets: dict[TopicPartitionKey, int] = {}
    first_line: dict[TopicPartitionKey, int] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = [f.strip() for f in line.split(",")]
        if not line.strip() or [f.lower() for f in fields] == ["topic", "partition", "offset"]:
            continue
        if len(fields) != 3:
            extra = " (a group column? export with one --group)" if len(fields) == 4 else ""
            problems.append(f"line {number}: {line!r} has {len(fields)} fields{extra}; expected topic,partition,offset")
        elif not _TOPIC_NAME.fullmatch(fields[0]):
            problems.append(f"line {number}: {fields[0]!r} is not a topic name")
        elif not fields[1].isdigit() or not re.fullmatch(r"-?\d+", fields[2]):
            problems.append(f"line {number}: partition and offset must be whole numbers, "
                            f"got {fields[1]!r} and {fields[2]!r}")
        elif (key := (fields[0], int(fields[1]))) in offsets:
            problems.append(f"line {number}: {key[0]}:{key[1]} already has an offset on line {first_line[key]}")
        else:
            offsets[key], first_line[key] = int(fields[2]), number
    if problems:
        more = [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        raise ParameterError(RUNBOOK, [(field, problem) for problem in problems[:10] + more])
    if not offsets:
        raise _invalid(field, "no offsets in the file; expected lines of topic,partition,offset")
    return offsets


# -- specs -------------------------------------------------------------------------------------

def _iso(ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Spec:
    def describe(self) -> str:
        """The spec as the runbook parameter that gives it, e.g. `to_offset=42`."""
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()
        values = [getattr(self, f.name) for f in fields(self)]
        return f"{name}={values[0]}" if values else name


@dataclass(frozen=True)
class ToDatetime(_Spec):
    timestamp_ms: int

    def describe(self) -> str:
        return f"to_datetime={_iso(self.timestamp_ms)}"


@dataclass(frozen=True)
class ByDuration(_Spec):
    duration_ms: int

    def describe(self) -> str:
        hours, rest = divmod(self.duration_ms, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
        parts = [f"{hours}H" if hours else "", f"{minutes}M" if minutes else "", f"{seconds}S" if rest else ""]
        return f"by_duration=PT{''.join(parts) or '0S'}"


@dataclass(frozen=True)
class ToEarliest(_Spec):
    pass


@dataclass(frozen=True)
class ToLatest(_Spec):
    pass


@dataclass(frozen=True)
class ToOffset(_Spec):
    offset: int


@dataclass(frozen=True)
class ShiftBy(_Spec):
    shift: int


@dataclass(frozen=True)
class ToCurrent(_Spec):
    pass


@dataclass(frozen=True)
class FromFile(_Spec):
    """Offsets read back from an `--export` CSV: (topic, partition, offset) in file order."""

    rows: tuple[tuple[str, int, int], ...]

    def describe(self) -> str:
        return f"from_file ({len(self.rows)} partitions)"


Spec = Union[ToDatetime, ByDuration, ToEarliest, ToLatest, ToOffset, ShiftBy, ToCurrent, FromFile]
_BUILD = {
    "to_datetime": lambda text: ToDatetime(parse_datetime(text)),
    "by_duration": lambda text: ByDuration(parse_duration(text)),
    "to_earliest": lambda _: ToEarliest(),
    "to_latest": lambda _: ToLatest(),
    "to_offset": ToOffset,
    "shift_by": ShiftBy,
    "to_current": lambda _: ToCurrent(),
    "from_file": lambda text: FromFile(tuple((t, p, o) for (t, p), o in parse_offsets_csv(text).items())),
}


def spec_from_parameters(
    to_datetime: str | None = None,
    by_duration: str | None = None,
    to_earliest: bool = False,
    to_latest: bool = False,
    to_offset: int | None = None,
    shift_by: int | None = None,
    to_current: bool = False,
    from_file: str | None = None,
) -> Spec:
    """The one reset spec the parameters give. `from_file` is the CSV text (not a path).

    Raises ParameterError when none or more than one is given, or when the one given is invalid.
    """
    values = locals()  # the parameters, by name
    given = {name: values[name] for name in _BUILD if values[name] is not None and values[name] is not False}
    if len(given) != 1:
        got = f"got {len(given)}: {', '.join(given)}" if given else "none was given"
        raise _invalid("spec", f"give exactly one of {', '.join(_BUILD)}; {got}")
    (name, value), = given.items()
    if name in {"to_offset", "shift_by"} and (isinstance(value, bool) or not isinstance(value, int)):
        raise _invalid(name, f"{value!r} is not a whole number")
    if name == "to_offset" and value < 0:
        raise _invalid(name, f"{value} is negative: offsets start at 0 (use to_earliest for the log start)")
    if name in {"to_datetime", "by_duration", "from_file"} and not isinstance(value, str):
        raise _invalid(name, f"expected text, got {type(value).__name__}")
    return _BUILD[name](value)


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
        """sha256 of the group and each partition's current and target offsets, in sorted order:
        an approval bound to it is void when a re-plan would commit something else."""
        rows = sorted([p.topic, p.partition, p.current_offset, p.target_offset] for p in self.partitions)
        canonical = json.dumps({"group": self.group, "partitions": rows}, separators=(",", ":"))
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
        raise _invalid("group", "must not be empty")
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
            raise _invalid("topic", "from_file names its own partitions: leave topic empty")
        scope = _resolve_scope(kafka, [TopicScope(t, (p,)) for t, p, _ in spec.rows], "from_file")
    elif topics:
        scope = _resolve_scope(kafka, parse_scope(topics), "topic")
    else:
        scope = list(committed)  # the coordinator's order, which the Java tool starts from too
        if not scope:
            raise _invalid("topic", f"group {group!r} has no committed offsets on kafka cluster {kafka.name!r}: "
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
        description += f" (records since {_iso(now_ms - spec.duration_ms)})"
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
                raise _invalid("shift_by", f"cannot shift {', '.join(missing[:10])}"
                               f"{' ...' if len(missing) > 10 else ''}: the group has no committed offset there "
                               f"(use to_offset, to_datetime or to_earliest, or leave them out of topic)")
            return {k: clamp(k, committed[k] + shift) for k in scope}
        case ToDatetime() | ByDuration():
            timestamp = spec.timestamp_ms if isinstance(spec, ToDatetime) else now_ms - spec.duration_ms
            found = kafka.offsets_for_timestamp(scope, timestamp)
            for key in (k for k in scope if found[k] < 0):
                warnings.append(f"{key[0]}:{key[1]}: no record at or after {_iso(timestamp)}: "
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
