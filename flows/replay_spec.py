"""The reset spec of the `kafka-replay` runbook: its parameters read as `kafka-consumer-groups.sh
--reset-offsets` reads its options (ConsumerGroupCommand, Kafka 4.1), and the `--export` CSV read back.

    spec = spec_from_parameters(to_datetime="2024-05-01T13:45:00.000Z")   # ToDatetime(1714571100000)
    spec.describe()                                                        # 'to_datetime=2024-05-01T13:45:00.000Z'
    scopes = parse_scope(["orders:0,2", "payments"])
    offsets = parse_offsets_csv("orders,0,42\norders,1,7\n")

Bad parameters raise ParameterError naming every invalid field. What the spec resets to is computed
by mq_runbooks.flows.replay_plan.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Union

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.integrations.kafka import TopicPartitionKey

__all__ = [
    "ByDuration", "FromFile", "ShiftBy", "Spec", "ToCurrent", "ToDatetime", "ToEarliest", "ToLatest", "ToOffset",
    "TopicScope", "parse_datetime", "parse_duration", "parse_offsets_csv", "parse_scope", "spec_from_parameters",
]

RUNBOOK = "kafka-replay"
DATETIME_HINT = "write yyyy-MM-ddTHH:mm:ss.SSS with an optional zone (Z, +01:00); no zone means UTC"


def invalid(field: str, message: str) -> ParameterError:
    """A ParameterError of the kafka-replay runbook about one field."""
    return ParameterError(RUNBOOK, [(field, message)])


def iso(ms: int) -> str:
    """Epoch milliseconds as the UTC time `--to-datetime` takes, e.g. 2024-05-01T13:45:00.000Z."""
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


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
            raise invalid(field, f"{text!r} has no milliseconds: the Java tool needs them too; {DATETIME_HINT}")
        if re.search(r"[+-]\d{4}$", stripped):
            raise invalid(field, f"{text!r}: write the zone as +hh:mm (the Java tool reads +0130 as +01:00)")
        raise invalid(field, f"{text!r} is not a date and time; {DATETIME_HINT}, e.g. 2024-05-01T13:45:00.000Z")
    year, month, day, hour, minute, second, milli, _z, sign, zone_h, zone_m = match.groups()
    offset = timedelta(hours=int(zone_h or 0), minutes=int(zone_m or 0)) * (-1 if sign == "-" else 1)
    # Java's calendar refuses zone offsets outside -13:00..+14:00 and re-reads them as whole hours.
    if not timedelta(hours=-13) <= offset <= timedelta(hours=14) or int(zone_m or 0) > 59:
        raise invalid(field, f"{text!r}: the zone offset must lie between -13:00 and +14:00")
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          int(milli) * 1000, tzinfo=timezone(offset))
    except ValueError as exc:
        raise invalid(field, f"{text!r} is not a valid date and time ({exc}); {DATETIME_HINT}")
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
        raise invalid(field, f"{text!r} is not an ISO-8601 duration PnDTnHnMnS, e.g. PT15M, PT2H30M, P1D")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    nanos = ((int(days or 0) * 24 + int(hours or 0)) * 60 + int(minutes or 0)) * 60 * 10**9
    fraction_nanos = int((fraction or "").ljust(9, "0"))
    nanos += int(seconds or 0) * 10**9 + (-fraction_nanos if (seconds or "").startswith("-") else fraction_nanos)
    nanos = -nanos if sign == "-" else nanos
    if nanos < 0:
        raise invalid(field, f"{text!r} is negative: give how far back to go, e.g. PT15M")
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

    Blank lines and a `topic,partition,offset` header are skipped. Errors name their line numbers and
    what is wrong, never what the line holds (the file may not be the CSV it was said to be).
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
            problems.append(f"line {number}: expected 3 comma-separated fields topic,partition,offset, "
                            f"found {len(fields)}{extra}")
        elif not _TOPIC_NAME.fullmatch(fields[0]):
            problems.append(f"line {number}: the first field is not a topic name "
                            f"(1 to 249 letters, digits, '.', '_', '-')")
        elif not fields[1].isdigit() or not re.fullmatch(r"-?\d+", fields[2]):
            problems.append(f"line {number}: partition and offset (fields 2 and 3) must be whole numbers")
        elif (key := (fields[0], int(fields[1]))) in offsets:
            problems.append(f"line {number}: its topic and partition already have an offset on line {first_line[key]}")
        else:
            offsets[key], first_line[key] = int(fields[2]), number
    if problems:
        more = [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        raise ParameterError(RUNBOOK, [(field, problem) for problem in problems[:10] + more])
    if not offsets:
        raise invalid(field, "no offsets in the file; expected lines of topic,partition,offset")
    return offsets


# -- specs -------------------------------------------------------------------------------------

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
        return f"to_datetime={iso(self.timestamp_ms)}"


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
        raise invalid("spec", f"give exactly one of {', '.join(_BUILD)}; {got}")
    (name, value), = given.items()
    if name in {"to_offset", "shift_by"} and (isinstance(value, bool) or not isinstance(value, int)):
        raise invalid(name, f"{value!r} is not a whole number")
    if name == "to_offset" and value < 0:
        raise invalid(name, f"{value} is negative: offsets start at 0 (use to_earliest for the log start)")
    if name in {"to_datetime", "by_duration", "from_file"} and not isinstance(value, str):
        raise invalid(name, f"expected text, got {type(value).__name__}")
    spec = _BUILD[name](value)
    # Kafka reads negative timestamps as "latest" (-1) and "earliest" (-2): refuse any time before 1970.
    if isinstance(spec, ToDatetime) and spec.timestamp_ms < 0:
        raise invalid(name, f"{value!r} is before 1970-01-01T00:00:00.000Z, the earliest time Kafka records")
    if isinstance(spec, ByDuration) and spec.duration_ms > time.time() * 1000:
        raise invalid(name, f"{value!r} reaches back before 1970-01-01, the earliest time Kafka records")
    return spec
