"""mq_runbooks.flows.replay_spec and replay_plan: parsers and errors (fast), then every reset spec held byte for byte against
`kafka-consumer-groups --reset-offsets --dry-run --export` on the same real topics and groups.

The Java cases all run in one JVM (a small driver calls ConsumerGroupCommand.main once per case and
keeps each case's stdout apart): one JVM start instead of a dozen.
"""
from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from hypothesis import given
from hypothesis import strategies as st

from mq_runbooks.base.errors import ParameterError
from mq_runbooks.flows.java_order import JavaHashMap
from mq_runbooks.flows.replay_plan import PartitionPlan, ReplayPlan, plan_replay
from mq_runbooks.flows.replay_spec import (
    ByDuration, FromFile, ShiftBy, ToCurrent, ToDatetime, ToEarliest, ToLatest, ToOffset, TopicScope, iso,
    parse_datetime, parse_duration, parse_offsets_csv, parse_scope, spec_from_parameters,
)
from mq_runbooks.integrations.kafka import KafkaClient

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def problems(excinfo) -> list[tuple[str, str]]:
    assert excinfo.value.runbook == "kafka-replay"
    return excinfo.value.problems


# -- parsers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2024-01-01T00:00:00.000", 1704067200000),
    ("2024-01-01T00:00:00.000Z", 1704067200000),
    ("2024-01-01T00:00:00.000+01:00", 1704063600000),
    ("2024-01-01T00:00:00.000+01", 1704063600000),
    ("2024-01-01T00:00:00.000-05:30", 1704087000000),
    ("2024-01-01T00:00:00.000+05:45", 1704046500000),
    ("2024-02-29T23:59:59.999Z", 1709251199999),
    ("1970-01-01T00:00:00.000", 0),
])
def test_parse_datetime_reads_what_the_java_tool_reads(text, expected):
    assert parse_datetime(text) == expected


@pytest.mark.parametrize("text, says", [
    ("2024-01-01T00:00:00Z", "no milliseconds"),
    ("2024-01-01T00:00:00", "no milliseconds"),
    ("2024-01-01T00:00:00.000+0130", "+hh:mm"),
    ("2024-01-01", "not a date and time"),
    ("yesterday", "not a date and time"),
    ("2024-01-01T00:00:00.5", "not a date and time"),
    ("2024-13-01T00:00:00.000", "not a valid date"),
    ("2024-02-30T00:00:00.000", "not a valid date"),
    ("2024-01-01T24:00:00.000", "not a valid date"),
    ("2024-01-01T00:00:00.000+14:30", "between -13:00 and +14:00"),
    ("2024-01-01T00:00:00.000Zjunk", "not a date and time"),
])
def test_parse_datetime_refuses_with_the_format(text, says):
    with pytest.raises(ParameterError) as excinfo:
        parse_datetime(text)
    [(field, message)] = problems(excinfo)
    assert field == "to_datetime" and says in message and repr(text) in message


@pytest.mark.parametrize("text, ms", [
    ("PT15M", 900_000), ("P1DT2H", 93_600_000), ("PT1.5S", 1_500), ("pt1m", 60_000), ("PT0.0009S", 0),
    ("P1D", 86_400_000), ("PT2H30M", 9_000_000), ("PT2H-30M", 5_400_000), ("+PT1S", 1000), ("PT0S", 0),
])
def test_parse_duration_reads_java_durations(text, ms):
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text, says", [
    ("15m", "not an ISO-8601 duration"), ("P2W", "not an ISO-8601 duration"), ("PT", "not an ISO-8601"),
    ("P", "not an ISO-8601"), ("P1Y", "not an ISO-8601"), ("-PT15M", "negative"), ("PT-1S", "negative"),
])
def test_parse_duration_refuses(text, says):
    with pytest.raises(ParameterError) as excinfo:
        parse_duration(text)
    [(field, message)] = problems(excinfo)
    assert field == "by_duration" and says in message


def test_parse_scope():
    assert parse_scope(["orders", "billing:0,2", " audit.v1 : 3 "]) == [
        TopicScope("orders"), TopicScope("billing", (0, 2)), TopicScope("audit.v1", (3,)),
    ]


def test_parse_scope_names_every_bad_item():
    with pytest.raises(ParameterError) as excinfo:
        parse_scope(["ok", "bad topic", "t:", "t:a,1", "u:1,1", "ok:2", "v:0", "v"])
    messages = [m for _, m in problems(excinfo)]
    assert len(messages) == 6 and all(field == "topic" for field, _ in problems(excinfo))
    assert "'bad topic'" in messages[0] and "not a topic name" in messages[0]
    assert "partitions must be numbers" in messages[1] and "partitions must be numbers" in messages[2]
    assert messages[3] == "u:1 is named twice ('u:1,1' and 'u:1,1')"
    assert messages[4] == "ok:2 is named twice ('ok' and 'ok:2')"
    assert messages[5] == "v is named twice ('v:0' and 'v')"


def test_parse_offsets_csv_reads_export_output_and_names_bad_lines():
    assert parse_offsets_csv("topic,partition,offset\nt,1,5\nt,0,7\n\nu,0,-1\n\n") == {
        ("t", 1): 5, ("t", 0): 7, ("u", 0): -1,
    }
    with pytest.raises(ParameterError) as excinfo:
        parse_offsets_csv("t,0,5\ng,t,1,5\nt,x,1\nt,0,6\nbad name,0,1\nt,2\n")
    assert [m for _, m in problems(excinfo)] == [
        "line 2: expected 3 comma-separated fields topic,partition,offset, found 4 "
        "(a group column? export with one --group)",
        "line 3: partition and offset (fields 2 and 3) must be whole numbers",
        "line 4: its topic and partition already have an offset on line 1",
        "line 5: the first field is not a topic name (1 to 249 letters, digits, '.', '_', '-')",
        "line 6: expected 3 comma-separated fields topic,partition,offset, found 2",
    ]
    with pytest.raises(ParameterError, match="no offsets in the file"):
        parse_offsets_csv("\n\n")


@pytest.mark.parametrize("text", [
    "root:x:0:0:root:/root:/bin/bash\n",
    "DB_PASSWORD=hunter2-secret\n",
    "topic,partition,offset\nhunter2-secret,0,1\nhunter2-secret,0,2\n",
    "t,hunter2-secret,1\nhunter2 secret,0,1\n",
])
def test_parse_offsets_csv_errors_never_quote_the_file(text):
    with pytest.raises(ParameterError) as excinfo:
        parse_offsets_csv(text)
    message = str(excinfo.value)
    assert "line " in message
    for secret in ("root:x", "/bin/bash", "hunter2", "DB_PASSWORD"):
        assert secret not in message


@pytest.mark.parametrize("given, expected", [
    ({"to_datetime": "0001-01-01T00:00:00.000"}, "before 1970-01-01"),
    ({"to_datetime": "1969-12-31T23:59:59.999Z"}, "before 1970-01-01"),
    ({"by_duration": "P1000000D"}, "reaches back before 1970-01-01"),
])
def test_times_before_the_epoch_are_bad_input_not_kafka_special_values(given, expected):
    with pytest.raises(ParameterError, match=expected):
        spec_from_parameters(**given)


def test_the_epoch_itself_is_a_time():
    assert spec_from_parameters(to_datetime="1970-01-01T00:00:00.000Z") == ToDatetime(0)


@given(st.lists(st.tuples(st.from_regex(r"[a-zA-Z0-9._-]{1,20}", fullmatch=True).filter(lambda t: t not in {".", ".."}),
                          st.integers(0, 10_000), st.integers(0, 2**62)), unique_by=lambda r: r[:2], min_size=1))
def test_to_csv_round_trips_through_parse_offsets_csv(rows):
    plan = ReplayPlan("g", "to_earliest", tuple(PartitionPlan(t, p, None, o, 0, o) for t, p, o in rows))
    assert parse_offsets_csv(plan.to_csv()) == {(t, p): o for t, p, o in rows}


def test_spec_from_parameters_builds_each_spec():
    assert spec_from_parameters(to_datetime="2024-01-01T00:00:00.000Z") == ToDatetime(1704067200000)
    assert spec_from_parameters(by_duration="PT15M") == ByDuration(900_000)
    assert spec_from_parameters(to_earliest=True) == ToEarliest()
    assert spec_from_parameters(to_latest=True) == ToLatest()
    assert spec_from_parameters(to_offset=0) == ToOffset(0)
    assert spec_from_parameters(shift_by=-5) == ShiftBy(-5)
    assert spec_from_parameters(to_current=True) == ToCurrent()
    assert spec_from_parameters(from_file="t,0,5\nt,1,6\n") == FromFile((("t", 0, 5), ("t", 1, 6)))
    assert ByDuration(93_601_500).describe() == "by_duration=PT26H1.5S"  # as Duration.toString()
    assert ToDatetime(1704067200000).describe() == "to_datetime=2024-01-01T00:00:00.000Z"


@pytest.mark.parametrize("kwargs, field, says", [
    ({}, "spec", "none was given"),
    ({"to_earliest": True, "to_latest": True}, "spec", "got 2: to_earliest, to_latest"),
    ({"to_offset": 3, "shift_by": 0, "to_current": True}, "spec", "got 3: to_offset, shift_by, to_current"),
    ({"to_offset": -1}, "to_offset", "negative"),
    ({"to_offset": "5"}, "to_offset", "not a whole number"),
    ({"shift_by": True}, "shift_by", "not a whole number"),
    ({"by_duration": "15 minutes"}, "by_duration", "ISO-8601"),
    ({"to_datetime": "now"}, "to_datetime", "yyyy-MM-ddTHH:mm:ss.SSS"),
    ({"from_file": "t;0;5"}, "from_file", "line 1"),
])
def test_spec_from_parameters_refuses(kwargs, field, says):
    with pytest.raises(ParameterError) as excinfo:
        spec_from_parameters(**kwargs)
    [(got_field, message)] = problems(excinfo)
    assert got_field == field and says in message
    if field == "spec":
        assert "to_datetime, by_duration, to_earliest, to_latest, to_offset, shift_by, to_current, from_file" in message


def test_plan_totals_and_digest():
    plan = ReplayPlan("g", "to_offset=5", (
        PartitionPlan("t", 1, 9, 5, 0, 10), PartitionPlan("t", 0, 2, 5, 0, 10), PartitionPlan("u", 0, None, 5, 0, 9),
    ))
    assert [p.replayed for p in plan.partitions] == [4, -3, None]
    assert (plan.messages_replayed, plan.messages_skipped) == (4, 3)
    reordered = ReplayPlan("g", "other words", tuple(reversed(plan.partitions)), ("a warning",))
    assert reordered.digest() == plan.digest() and len(plan.digest()) == 64
    moved = ReplayPlan("g", "to_offset=5", plan.partitions[:2] + (PartitionPlan("u", 0, None, 6, 0, 9),))
    assert moved.digest() != plan.digest()
    assert ReplayPlan("h", "to_offset=5", plan.partitions).digest() != plan.digest()
    assert plan.to_csv() == "t,1,5\nt,0,5\nu,0,5\n\n"


# -- against the Java tool ------------------------------------------------------------------------

DRIVER = r"""
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.*;

/** Runs each line of cases.tsv (name TAB args...) in this one JVM, keeping each case's output apart. */
public class ResetDriver {
    public static void main(String[] argv) throws Exception {
        Path dir = Paths.get(argv[0]);
        org.apache.kafka.common.utils.Exit.setExitProcedure((code, message) -> {
            throw new IllegalStateException("exit " + code);
        });
        PrintStream out = System.out, err = System.err;
        for (String line : Files.readAllLines(dir.resolve("cases.tsv"))) {
            String[] fields = line.split("\t");
            ByteArrayOutputStream stdout = new ByteArrayOutputStream(), stderr = new ByteArrayOutputStream();
            System.setOut(new PrintStream(stdout, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(stderr, true, StandardCharsets.UTF_8));
            String status = "ok";
            try {
                if (fields[1].equals("getDateTime"))
                    System.out.print(org.apache.kafka.common.utils.Utils.getDateTime(fields[2]));
                else if (fields[1].equals("Duration.parse"))
                    System.out.print(java.time.Duration.parse(fields[2]).toMillis());
                else
                    org.apache.kafka.tools.consumer.group.ConsumerGroupCommand.main(
                        Arrays.copyOfRange(fields, 1, fields.length));
            } catch (Throwable e) {
                status = "failed: " + e;
            }
            System.setOut(out);
            System.setErr(err);
            Files.write(dir.resolve(fields[0] + ".stdout"), stdout.toByteArray());
            Files.write(dir.resolve(fields[0] + ".stderr"), stderr.toByteArray());
            Files.writeString(dir.resolve(fields[0] + ".status"), status);
        }
    }
}
"""
JAVA_FALLBACK = re.compile(
    r"\nWarn: Partition (\d+) from topic (\S+) is empty\. Falling back to latest known offset\.\n")
MINUTE = 60_000
COUNTS = {"a": [12, 5, 20], "b": [8, 0, 15, 3], "c": [7, 11], "d": [p % 4 + 1 for p in range(24)]}
DELETE_BEFORE = {("a", 2): 4, ("b", 2): 9, ("c", 1): 2}
COMMITTED = {("a", 0): 10, ("a", 1): 5, ("a", 2): 6, ("b", 0): 2, ("b", 2): 10, ("c", 1): 1,
             **{("d", p): p % 2 for p in range(24)}}
FROM_FILE = "a,2,1\nc,0,100\nb,0,3\nd,5,0\na,0,11\n"
DATETIMES = ["2024-01-01T00:00:00.000", "2024-06-30T23:59:59.999+02:00", "2024-01-01T00:00:00.000-05",
             "1999-12-31T12:00:00.001-13:00", "2030-01-01T00:00:00.000+14:00"]
DURATIONS = ["PT15M", "P1DT2H", "PT1.5S", "pt1m", "PT2H-30M", "+PT1S", "P3DT0.25S", "PT0,5S"]


def keys_share_a_bucket(run: str) -> bool:
    """Whether some committed partitions share a bucket of the Java tool's HashMap, so that the
    order inside a bucket (the group coordinator's order) is put to the test too (~9 runs in 10)."""
    keys = [(f"replay-{key}-{run}", partition) for key, partition in COMMITTED]
    return JavaHashMap().put_all(keys).keys() != JavaHashMap().put_all(reversed(keys)).keys()


class World:
    """Four topics with different record counts per partition, timestamps one minute apart from an
    hour ago, some log starts raised; group `g1` with committed offsets, group `g2` with none."""

    def __init__(self, kafka: KafkaClient, bootstrap: str):
        run = next(run for run in (uuid.uuid4().hex[:8] for _ in range(1000)) if keys_share_a_bucket(run))
        self.topic = {key: f"replay-{key}-{run}" for key in COUNTS}
        self.g1, self.g2 = f"replay-g1-{run}", f"replay-g2-{run}"
        self.base_ms = int(time.time()) * 1000 - 60 * MINUTE
        # Between records 5 and 6 of every partition, written in +01:00 as an operator might.
        self.datetime = datetime_plus_one_hour(self.base_ms + 5 * MINUTE + 30_000)
        for key, counts in COUNTS.items():
            kafka.create_topic(self.topic[key], len(counts))
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for key, counts in COUNTS.items():
            for partition, count in enumerate(counts):
                for i in range(count):
                    producer.produce(self.topic[key], f"{key}{partition}-{i}".encode(), partition=partition,
                                     timestamp=self.base_ms + i * MINUTE)
        assert producer.flush(10) == 0
        assert set(kafka.alter_group_offsets(self.g1, self.keyed(COMMITTED)).values()) == {None}
        kafka.delete_records_before(self.keyed(DELETE_BEFORE))

    def keyed(self, by_short_name: dict) -> dict:
        return {(self.topic[key], partition): value for (key, partition), value in by_short_name.items()}

    def __getattr__(self, name: str) -> str:  # world.a -> the real name of topic "a"
        if name in COUNTS:
            return self.topic[name]
        raise AttributeError(name)


@pytest.fixture(scope="module")
def kafka(clusters):
    with KafkaClient(clusters.kafka_cluster("primary").client_config(), name="primary") as client:
        yield client


@pytest.fixture(scope="module")
def world(kafka, clusters):
    return World(kafka, clusters.kafka_cluster("primary").bootstrap_servers)


def java_cases(w: World, bootstrap: str, from_file: Path) -> dict[str, list[str]]:
    """Name -> ConsumerGroupCommand arguments; the same names key the Python plans below."""
    reset = ["--bootstrap-server", bootstrap, "--reset-offsets", "--dry-run", "--export"]
    t = w.topic
    abc = ["--topic", t["a"], "--topic", t["b"], "--topic", t["c"]]
    return {
        "earliest_all_topics": reset + ["--group", w.g1, "--all-topics", "--to-earliest"],
        "latest_three_topics": reset + ["--group", w.g1, *abc, "--to-latest"],
        "offset_subsets": reset + ["--group", w.g1, "--topic", f"{t['a']}:0,2", "--topic", f"{t['b']}:3,1",
                                   "--topic", t["c"], "--to-offset", "9"],
        "offset_below_start": reset + ["--group", w.g1, "--topic", t["a"], "--topic", t["b"], "--to-offset", "1"],
        "shift_back_all_topics": reset + ["--group", w.g1, "--all-topics", "--shift-by", "-3"],
        "shift_past_end": reset + ["--group", w.g1, "--topic", t["a"], "--shift-by", "100"],
        "shift_uncommitted": reset + ["--group", w.g1, "--topic", t["c"], "--shift-by", "1"],
        "datetime_three_topics": reset + ["--group", w.g1, *abc, "--to-datetime", w.datetime],
        "duration_all_topics": reset + ["--group", w.g1, "--all-topics", "--by-duration", "PT50M30S"],
        "current_mixed": reset + ["--group", w.g1, *abc, "--to-current"],
        "current_nothing_committed": reset + ["--group", w.g2, "--topic", t["a"], "--topic", f"{t['c']}:1,0",
                                              "--to-current"],
        "earliest_many_partitions": reset + ["--group", w.g2, "--topic", t["d"], "--topic", t["b"], "--topic", t["a"],
                                             "--to-earliest"],
        "from_file": reset + ["--group", w.g1, "--from-file", str(from_file)],
    }


def datetime_plus_one_hour(ms: int) -> str:
    seconds, milli = divmod(ms + 3_600_000, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}+01:00"


@pytest.fixture(scope="module")
def java(world, clusters, tmp_path_factory) -> dict[str, dict[str, str]]:
    """Every Java case's stdout, stderr and status, from one JVM."""
    directory = tmp_path_factory.mktemp("java")
    (directory / "ResetDriver.java").write_text(DRIVER)
    from_file = directory / "offsets.csv"
    from_file.write_text(world_csv(world, FROM_FILE))
    cases = java_cases(world, clusters.kafka_cluster("primary").bootstrap_servers, from_file)
    lines = ["\t".join([name, *args]) for name, args in cases.items()]
    lines += [f"datetime{i}\tgetDateTime\t{text}" for i, text in enumerate(DATETIMES)]
    lines += [f"duration{i}\tDuration.parse\t{text}" for i, text in enumerate(DURATIONS)]
    (directory / "cases.tsv").write_text("\n".join(lines) + "\n")
    result = subprocess.run([str(REPO / "dev" / "kafka-run-class"), str(directory / "ResetDriver.java"),
                             str(directory)], timeout=120, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    names = [*cases, *(f"datetime{i}" for i in range(len(DATETIMES))), *(f"duration{i}" for i in range(len(DURATIONS)))]
    return {name: {part: (directory / f"{name}.{part}").read_text() for part in ("stdout", "stderr", "status")}
            for name in names}


def world_csv(w: World, text: str) -> str:
    return "".join(f"{w.topic[key]},{rest}\n" for key, rest in (line.split(",", 1) for line in text.splitlines()))


def python_plans(kafka: KafkaClient, w: World) -> dict[str, ReplayPlan]:
    t = w.topic
    return {
        "earliest_all_topics": plan_replay(kafka, w.g1, ToEarliest(), None),
        "latest_three_topics": plan_replay(kafka, w.g1, ToLatest(), [t["a"], t["b"], t["c"]]),
        "offset_subsets": plan_replay(kafka, w.g1, ToOffset(9), [f"{t['a']}:0,2", f"{t['b']}:3,1", t["c"]]),
        "offset_below_start": plan_replay(kafka, w.g1, ToOffset(1), [t["a"], t["b"]]),
        "shift_back_all_topics": plan_replay(kafka, w.g1, ShiftBy(-3), None),
        "shift_past_end": plan_replay(kafka, w.g1, ShiftBy(100), [t["a"]]),
        "datetime_three_topics": plan_replay(kafka, w.g1, spec_from_parameters(to_datetime=w.datetime),
                                             [t["a"], t["b"], t["c"]]),
        "duration_all_topics": plan_replay(kafka, w.g1, spec_from_parameters(by_duration="PT50M30S"), None),
        "current_mixed": plan_replay(kafka, w.g1, ToCurrent(), [t["a"], t["b"], t["c"]]),
        "current_nothing_committed": plan_replay(kafka, w.g2, ToCurrent(), [t["a"], f"{t['c']}:1,0"]),
        "earliest_many_partitions": plan_replay(kafka, w.g2, ToEarliest(), [t["d"], t["b"], t["a"]]),
        "from_file": plan_replay(kafka, w.g1, spec_from_parameters(from_file=world_csv(w, FROM_FILE)), None),
    }


@pytest.fixture(scope="module")
def plans(kafka, world, java) -> dict[str, ReplayPlan]:
    # Planned after the Java run so both see the same "now" window for by_duration.
    return python_plans(kafka, world)


CSV_CASES = ["earliest_all_topics", "latest_three_topics", "offset_subsets", "offset_below_start",
             "shift_back_all_topics", "shift_past_end", "datetime_three_topics", "duration_all_topics",
             "current_mixed", "current_nothing_committed", "earliest_many_partitions", "from_file"]


@pytest.mark.parametrize("case", CSV_CASES)
def test_to_csv_is_what_the_java_tool_exports(case, java, plans):
    assert java[case]["status"] == "ok", java[case]
    # The Java tool also prints its time fall-backs to stdout, ahead of the CSV.
    fallbacks = sorted((topic, int(partition)) for partition, topic in JAVA_FALLBACK.findall(java[case]["stdout"]))
    assert plans[case].to_csv() == JAVA_FALLBACK.sub("", java[case]["stdout"])
    ours = sorted((p.topic, p.partition) for p in plans[case].partitions
                  if any(w.startswith(f"{p.topic}:{p.partition}: no record") for w in plans[case].warnings))
    assert ours == fallbacks


def test_plans_hold_the_expected_offsets(world, plans):
    """Spot checks that the compared CSVs exercise what they should: clamping, fall-backs, uncommitted."""
    def targets(case):
        return {(key, p.partition): p.target_offset
                for p in plans[case].partitions for key, name in world.topic.items() if name == p.topic}

    assert targets("offset_subsets") == {("a", 0): 9, ("a", 2): 9, ("b", 3): 3, ("b", 1): 0, ("c", 0): 7, ("c", 1): 9}
    assert targets("offset_below_start")[("a", 2)] == 4 and targets("offset_below_start")[("b", 2)] == 9
    assert targets("shift_back_all_topics")[("c", 1)] == 2 and targets("shift_back_all_topics")[("a", 0)] == 7
    assert targets("datetime_three_topics") == {("a", 0): 6, ("a", 1): 5, ("a", 2): 6, ("b", 0): 6, ("b", 1): 0,
                                                ("b", 2): 9, ("b", 3): 3, ("c", 0): 6, ("c", 1): 6}
    assert targets("duration_all_topics")[("a", 2)] == 10 and targets("duration_all_topics")[("d", 3)] == 4
    assert targets("current_mixed")[("b", 1)] == 0 and targets("current_mixed")[("c", 0)] == 7
    assert targets("from_file") == {("a", 2): 4, ("c", 0): 7, ("b", 0): 3, ("d", 5): 0, ("a", 0): 11}
    clamp_warnings = plans["from_file"].warnings
    assert any("offset 1 is before the log start 4" in w for w in clamp_warnings)
    assert any("offset 100 is past the log end 7" in w for w in clamp_warnings)
    shift = plans["shift_back_all_topics"]
    assert shift.messages_replayed == sum(min(3, c - s) for c, s in [(10, 0), (5, 0), (6, 4), (2, 0), (10, 9)]) + 12
    assert len(plans["earliest_all_topics"].partitions) == len(COMMITTED)


def test_shift_by_without_a_committed_offset_fails_like_java(kafka, world, java):
    assert "Cannot shift offset for partition" in java["shift_uncommitted"]["stderr"]
    with pytest.raises(ParameterError) as excinfo:
        plan_replay(kafka, world.g1, ShiftBy(1), [world.c])
    [(field, message)] = problems(excinfo)
    assert field == "shift_by" and f"cannot shift {world.c}:0:" in message and f"{world.c}:1" not in message


def test_parse_datetime_and_duration_agree_with_java(java):
    for i, text in enumerate(DATETIMES):
        assert java[f"datetime{i}"]["status"] == "ok"
        assert parse_datetime(text) == int(java[f"datetime{i}"]["stdout"]), text
    for i, text in enumerate(DURATIONS):
        assert java[f"duration{i}"]["status"] == "ok"
        assert parse_duration(text) == int(java[f"duration{i}"]["stdout"]), text


# -- scope errors on the real cluster ---------------------------------------------------------------

def test_unknown_topics_and_partitions_are_parameter_errors(kafka, world):
    with pytest.raises(ParameterError) as excinfo:
        plan_replay(kafka, world.g1, ToEarliest(), [f"{world.a}:0,3,7", world.a + "x", f"{world.b}:1"])
    messages = [m for _, m in problems(excinfo)]
    assert messages[0].startswith(f"topic '{world.a}x' does not exist on kafka cluster 'primary' (did you mean")
    assert messages[1:] == [f"{world.a}:3 does not exist: {world.a} has partitions 0-2",
                            f"{world.a}:7 does not exist: {world.a} has partitions 0-2"]


def test_all_topics_scope_needs_committed_offsets(kafka, world):
    with pytest.raises(ParameterError) as excinfo:
        plan_replay(kafka, world.g2, ToLatest(), None)
    [(field, message)] = problems(excinfo)
    assert field == "topic" and f"group '{world.g2}' has no committed offsets" in message


def test_from_file_names_its_own_scope(kafka, world):
    spec = spec_from_parameters(from_file=f"{world.a},0,1\n{world.a},9,1\nnope-{world.a},0,1\n")
    with pytest.raises(ParameterError) as excinfo:
        plan_replay(kafka, world.g1, spec, None)
    assert [m.split(" (")[0] for _, m in problems(excinfo)] == [
        f"topic 'nope-{world.a}' does not exist on kafka cluster 'primary'",
        f"{world.a}:9 does not exist: {world.a} has partitions 0-2",
    ]
    with pytest.raises(ParameterError, match="from_file names its own partitions"):
        plan_replay(kafka, world.g1, spec, [world.a])


def test_by_duration_counts_back_from_now_ms(kafka, world):
    now_ms = world.base_ms + 60 * MINUTE
    plan = plan_replay(kafka, world.g1, spec_from_parameters(by_duration="PT57M30S"), [f"{world.a}:1", world.c],
                       now_ms=now_ms)
    assert [(p.partition, p.target_offset) for p in sorted(plan.partitions, key=lambda p: (p.topic, p.partition))] \
        == [(1, 3), (0, 3), (1, 3)]
    assert plan.spec_description == f"by_duration=PT57M30S (records since {iso(world.base_ms + 150_000)})"


def test_a_group_with_members_is_planned_with_a_warning(kafka, world, clusters):
    group = f"{world.g1}-live"
    consumer = Consumer({**clusters.kafka_cluster("primary").client_config(), "group.id": group,
                         "client.id": "replayer", "enable.auto.commit": False})
    consumer.subscribe([world.c])
    try:
        deadline = time.monotonic() + 20
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        plan = plan_replay(kafka, group, ToEarliest(), [world.c])
    finally:
        consumer.close()
    assert plan.warnings == (f"group '{group}' is Stable with 1 member(s): the offsets can only be applied "
                             f"once it is Empty (stop its consumers)",)
    assert [p.current_offset for p in plan.partitions] == [None, None] and plan.messages_replayed == 0
