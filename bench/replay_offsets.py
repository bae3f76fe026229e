"""Benchmark: resetting a consumer group's offsets on 1,000 partitions, the engine vs. the Java tool.

    .venv/bin/python bench/replay_offsets.py [--runs N]      (default 5; needs the local stack: dev/stack up)

Setup (once, idempotent): topics bench-replay-0..9 with 100 partitions each on the `primary` cluster,
MESSAGES_PER_PARTITION records in every partition, and the group `bench-replay-group` (Empty) with a
committed offset on all 1,000 partitions.

Each round picks one spec, alternating --to-earliest / --to-latest, and times every variant on it.
Before each timed run the group is moved (untimed) to the opposite end of the log, so every timed run
really changes all 1,000 committed offsets; after it the committed offsets are read back (untimed) and
must equal the expected targets, or the benchmark stops. The order of the variants rotates per round.

Variants (wall time):
  engine in-process     plan_replay (all topics the group has committed) + KafkaClient.alter_group_offsets
                        + committed_offsets read back and compared to the plan, one KafkaClient per step
                        as flows/kafka_replay.py's compute_plan / alter / verify_plan do.
  engine fresh process  the same code in `.venv/bin/python -c` (interpreter start and imports included).
  engine fresh process, via mq_runbooks.flows.kafka_replay
                        compute_plan + alter + verify_plan.fn from the runbook module itself, which
                        imports Prefect (what a CLI invocation of the runbook module pays).
  Java tool             dev/kafka-run-class ...ConsumerGroupCommand --reset-offsets --all-topics
                        --to-earliest|--to-latest --execute (JVM start included).
Also measured (not compared): the start-up floors, `python -c "import ..."` and the Java tool's --version.

Writes bench/results/replay_offsets.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402

from mq_runbooks.flows.replay_plan import plan_replay  # noqa: E402
from mq_runbooks.flows.replay_spec import spec_from_parameters  # noqa: E402
from mq_runbooks.integrations.kafka import KafkaClient  # noqa: E402

BOOTSTRAP = "127.0.0.1:19092"
CONFIG = {"bootstrap.servers": BOOTSTRAP, "security.protocol": "PLAINTEXT"}  # KafkaCluster.client_config()
PREFIX = "bench-replay-"
TOPICS = [f"{PREFIX}{i}" for i in range(10)]
PARTITIONS = 100
MESSAGES_PER_PARTITION = 20
GROUP = f"{PREFIX}group"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
RUN_CLASS = str(ROOT / "dev" / "kafka-run-class")
COMMAND_CLASS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
RESULTS = ROOT / "bench" / "results" / "replay_offsets.md"
SPEC_FLAGS = {"to_earliest": "--to-earliest", "to_latest": "--to-latest"}
OPPOSITE = {"to_earliest": "to_latest", "to_latest": "to_earliest"}

# The engine path, run both in-process (ENGINE_CODE is exec'd once) and in a fresh interpreter.
ENGINE_CODE = '''
import sys
sys.path.insert(0, {root!r})
from mq_runbooks.flows.replay_plan import plan_replay
from mq_runbooks.flows.replay_spec import spec_from_parameters
from mq_runbooks.integrations.kafka import KafkaClient

def engine_reset(config, group, spec_name):
    spec = spec_from_parameters(**{{spec_name: True}})
    with KafkaClient(config, name="primary", timeout_s=10) as kafka:          # compute_plan
        plan = plan_replay(kafka, group, spec, None)
    with KafkaClient(config, name="primary", timeout_s=10) as kafka:          # alter
        errors = kafka.alter_group_offsets(group, plan.target_offsets())
    failed = {{tp: e for tp, e in errors.items() if e}}
    if failed:
        raise RuntimeError(f"alter failed on {{len(failed)}} partition(s): {{list(failed.items())[:5]}}")
    with KafkaClient(config, name="primary", timeout_s=10) as kafka:          # verify_plan
        committed = kafka.committed_offsets(group)
    wrong = [p for p in plan.partitions if committed.get((p.topic, p.partition)) != p.target_offset]
    if wrong:
        raise RuntimeError(f"verification failed for {{len(wrong)}} partition(s)")
    return len(plan.partitions), sum(p.current_offset != p.target_offset for p in plan.partitions)
'''.format(root=str(ROOT))

FRESH_CODE = ENGINE_CODE + '''
changed = engine_reset({config!r}, {group!r}, sys.argv[1])
print(*changed)
'''.format(config=CONFIG, group=GROUP)

# The same through the runbook module's own step functions (imports Prefect).
FRESH_FLOW_CODE = '''
import sys
sys.path.insert(0, {root!r})
from mq_runbooks.base.clusters import KafkaCluster
from mq_runbooks.base.clusters import Clusters
from mq_runbooks.base.settings import Settings
from mq_runbooks.flows.kafka_offsets import alter
from mq_runbooks.flows.kafka_replay import STEPS, ReplayParameters, compute_plan
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit.driver import Run
cluster = KafkaCluster(name="primary", bootstrap_servers={bootstrap!r})
params = ReplayParameters(cluster="primary", group={group!r}, **{{sys.argv[1]: True}})
with KafkaClient.from_cluster(cluster) as kafka:
    plan = compute_plan(kafka, params)
    alter(kafka, plan.group, plan.target_offsets())
run = Run(settings=Settings.from_environ(), clusters=Clusters(kafka={{"primary": cluster}}))
assert STEPS.verify(run, params, plan, None).ok
print(len(plan.partitions), sum(p.current_offset != p.target_offset for p in plan.partitions))
'''.format(root=str(ROOT), bootstrap=BOOTSTRAP, group=GROUP)

namespace: dict = {}
exec(compile(ENGINE_CODE, "<engine>", "exec"), namespace)
engine_reset = namespace["engine_reset"]


# -- setup ---------------------------------------------------------------------------------------

def setup(kafka: KafkaClient) -> dict[str, dict[tuple[str, int], int]]:
    """Topics, messages and the group; returns the expected targets of each spec."""
    existing = kafka.list_topics()
    for topic in TOPICS:
        if topic not in existing:
            print(f"creating {topic} ({PARTITIONS} partitions)")
            kafka.create_topic(topic, PARTITIONS)
        elif existing[topic] != PARTITIONS:
            sys.exit(f"{topic} exists with {existing[topic]} partitions, not {PARTITIONS}: delete it first")
    keys = [(t, p) for t in TOPICS for p in range(PARTITIONS)]
    logs = kafka.log_offsets(keys)
    short = {k: MESSAGES_PER_PARTITION - logs[k].log_end_offset for k in keys
             if logs[k].log_end_offset < MESSAGES_PER_PARTITION}
    if short:
        print(f"producing {sum(short.values())} messages into {len(short)} partitions")
        producer = Producer({**CONFIG, "linger.ms": 50, "batch.num.messages": 10000, "acks": "all"})
        for (topic, partition), count in short.items():
            for i in range(count):
                producer.produce(topic, value=f"bench message {i}".encode(), partition=partition)
            producer.poll(0)
        if producer.flush(30) != 0:
            sys.exit("producer did not deliver every message within 30s")
        logs = kafka.log_offsets(keys)
    earliest = {k: logs[k].log_start_offset for k in keys}
    latest = {k: logs[k].log_end_offset for k in keys}
    if any(earliest[k] >= latest[k] for k in keys):
        sys.exit("some partitions are empty: every partition needs messages for the resets to change offsets")

    if set(kafka.committed_offsets(GROUP)) != set(keys):
        print(f"committing offsets of {GROUP} on {len(keys)} partitions")
        consumer = Consumer({**CONFIG, "group.id": GROUP, "enable.auto.commit": False})
        consumer.commit(offsets=[TopicPartition(t, p, latest[(t, p)] // 2) for t, p in keys], asynchronous=False)
        consumer.close()
    deadline = time.monotonic() + 30
    while (state := kafka.describe_group(GROUP)).state != "Empty" or state.members:
        if time.monotonic() > deadline:
            sys.exit(f"group {GROUP} is {state.state} with {len(state.members)} member(s): it must be Empty")
        time.sleep(0.5)
    return {"to_earliest": earliest, "to_latest": latest}


def move_group(kafka: KafkaClient, targets: dict[tuple[str, int], int]) -> None:
    errors = kafka.alter_group_offsets(GROUP, targets)
    if any(errors.values()):
        sys.exit(f"preparing the group failed: {[e for e in errors.values() if e][:3]}")
    check(kafka, targets, "preparation")


def check(kafka: KafkaClient, expected: dict[tuple[str, int], int], what: str) -> None:
    committed = kafka.committed_offsets(GROUP)
    wrong = [k for k in expected if committed.get(k) != expected[k]]
    if wrong or len(committed) != len(expected):
        sys.exit(f"{what}: committed offsets differ from the expected targets on {len(wrong)} partition(s), "
                 f"e.g. {wrong[:3]} (committed {[committed.get(k) for k in wrong[:3]]})")


# -- the timed variants ----------------------------------------------------------------------------

def run_engine_inprocess(spec: str) -> float:
    start = time.perf_counter()
    partitions, changed = engine_reset(CONFIG, GROUP, spec)
    elapsed = time.perf_counter() - start
    if (partitions, changed) != (len(TOPICS) * PARTITIONS,) * 2:
        sys.exit(f"engine in-process planned {partitions} partition(s), {changed} changing")
    return elapsed


def _timed(argv: list[str], what: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def _fresh(code: str, spec: str, what: str) -> float:
    elapsed, out = _timed([PYTHON, "-c", code, spec], what)
    if out.split() != [str(len(TOPICS) * PARTITIONS)] * 2:
        sys.exit(f"{what}: unexpected output {out!r}")
    return elapsed


def run_engine_fresh(spec: str) -> float:
    return _fresh(FRESH_CODE, spec, "engine fresh process")


def run_engine_fresh_flow(spec: str) -> float:
    return _fresh(FRESH_FLOW_CODE, spec, "engine fresh process via mq_runbooks.flows.kafka_replay")


def run_java(spec: str) -> float:
    elapsed, out = _timed([RUN_CLASS, COMMAND_CLASS, "--bootstrap-server", BOOTSTRAP, "--group", GROUP,
                           "--reset-offsets", "--all-topics", SPEC_FLAGS[spec], "--execute"], "Java tool")
    rows = [line for line in out.splitlines() if line.startswith(GROUP)]
    if len(rows) != len(TOPICS) * PARTITIONS:
        sys.exit(f"Java tool printed {len(rows)} partition rows, expected {len(TOPICS) * PARTITIONS}")
    return elapsed


VARIANTS = {
    "engine, in-process": run_engine_inprocess,
    "engine, fresh process": run_engine_fresh,
    "engine, fresh process via mq_runbooks.flows.kafka_replay (imports Prefect)": run_engine_fresh_flow,
    "Java ConsumerGroupCommand (JVM start included)": run_java,
}
FLOORS = {
    "python -c 'import mq_runbooks.integrations.kafka, mq_runbooks.flows.replay_plan' (no Kafka work)":
        [PYTHON, "-c", "import sys; sys.path.insert(0, %r); import mq_runbooks.integrations.kafka, mq_runbooks.flows.replay_plan" % str(ROOT)],
    "python -c 'import mq_runbooks.flows.kafka_replay' (no Kafka work)":
        [PYTHON, "-c", "import sys; sys.path.insert(0, %r); import mq_runbooks.flows.kafka_replay" % str(ROOT)],
    "Java ConsumerGroupCommand --version (JVM start, no Kafka work)": [RUN_CLASS, COMMAND_CLASS, "--version"],
}


# -- report ----------------------------------------------------------------------------------------

def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return ((done.stdout or "") + (done.stderr or "")).strip().splitlines()[0]


def machine() -> dict[str, str]:
    import confluent_kafka
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    kafka_version = _version([RUN_CLASS, COMMAND_CLASS, "--version"])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": _version(["java", "-version"]),
        "confluent-kafka / librdkafka": f"{_first(confluent_kafka.version())} / {_first(confluent_kafka.libversion())}",
        "Kafka tools (ConsumerGroupCommand --version)": kafka_version,
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


ENGINE_SOURCES = ["flows/replay_plan.py", "flows/replay_spec.py", "integrations/kafka.py", "flows/kafka_replay.py"]


def source_state() -> dict[str, int]:
    return {name: (ROOT / name).stat().st_mtime_ns for name in ENGINE_SOURCES}


def code_version() -> str:
    head = _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *ENGINE_SOURCES],
                           capture_output=True, text=True).stdout.split("\n")
    dirty = [line[3:] for line in dirty if line.strip()]
    return f"commit {head}" + (f", with uncommitted changes in {', '.join(dirty)}" if dirty else "")


def _first(value) -> str:
    return str(value[0] if isinstance(value, tuple) else value)


def summarize(times: list[float]) -> tuple[float, float, float]:
    return statistics.median(times), min(times), max(times)


def report(runs: int, info: dict[str, str], times: dict[str, list[float]], floors: dict[str, list[float]],
           specs: list[str], started: dt.datetime, wall: float, changed_sources: list[str]) -> str:
    java = "Java ConsumerGroupCommand (JVM start included)"
    lines = [
        "# Offset reset of 1,000 partitions: engine vs. kafka-consumer-groups (ConsumerGroupCommand)",
        "",
        f"- date: {started.isoformat(timespec='seconds')}",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- broker: Apache Kafka `primary` at {BOOTSTRAP} (local dev stack, single broker)",
        f"- workload: group `{GROUP}`, {len(TOPICS)} topics x {PARTITIONS} partitions = "
        f"{len(TOPICS) * PARTITIONS} committed offsets, {MESSAGES_PER_PARTITION} messages per partition; "
        f"all topics the group has committed",
        f"- N = {runs} timed runs per variant; specs per round: {', '.join(SPEC_FLAGS[s] for s in specs)}",
        "- every timed run changed all 1,000 offsets (the group was moved, untimed, to the other end of the log "
        "first) and the committed offsets were read back afterwards (untimed) and equalled the expected targets",
        "- variant order rotated each round; the machine is noisy (2 cores shared): read medians and ratios",
        f"- engine code: {code_version()}",
        *([f"- WARNING: {', '.join(changed_sources)} changed on disk during the benchmark (someone edited it): "
           f"the in-process engine ran the version imported at the start, later fresh processes the new one"]
          if changed_sources else []),
        f"- total benchmark wall time: {wall:.0f} s; load average at the end: "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
        "## Wall time per reset (seconds)",
        "",
        "| variant | median | min | max | runs |",
        "|---|---:|---:|---:|---|",
    ]
    for name, values in times.items():
        med, lo, hi = summarize(values)
        lines.append(f"| {name} | {med:.3f} | {lo:.3f} | {hi:.3f} | {', '.join(f'{v:.3f}' for v in values)} |")
    lines += ["", "Start-up floors (same rounds, nothing sent to Kafka):", "",
              "| command | median | min | max |", "|---|---:|---:|---:|"]
    for name, values in floors.items():
        med, lo, hi = summarize(values)
        lines.append(f"| {name} | {med:.3f} | {lo:.3f} | {hi:.3f} |")
    java_med = statistics.median(times[java])
    lines += ["", "## Ratios (Java median / engine median)", ""]
    for name, values in times.items():
        if name == java:
            continue
        ratio = java_med / statistics.median(values)
        fair = " (the fair comparison: both pay process start)" if name == "engine, fresh process" else ""
        paired = statistics.median(j / e for j, e in zip(times[java], values))
        lines.append(f"- Java / {name}: **{ratio:.1f}x**{fair}; median of the per-round ratios {paired:.1f}x, "
                     f"min-to-min {min(times[java]) / min(values):.1f}x")
    java_floor = statistics.median(floors["Java ConsumerGroupCommand --version (JVM start, no Kafka work)"])
    lines += [
        "",
        "## Reading it",
        "",
        f"- Java median minus its `--version` floor: {java_med - java_floor:.3f} s of Kafka work plus the "
        f"tool's own class loading/JIT for the reset path; the engine in-process median is "
        f"{statistics.median(times['engine, in-process']):.3f} s.",
        "- The engine does one more round-trip set than the Java tool: it reads the offsets back to verify "
        "(the Java tool does not), and it opens one admin client per step as flows/kafka_replay.py does.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant (default 5)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    started = dt.datetime.now().astimezone()
    t0 = time.perf_counter()
    info = machine()
    sources_before = source_state()
    with KafkaClient(CONFIG, name="primary", timeout_s=10) as kafka:
        targets = setup(kafka)
        # One untimed warm-up of each variant, so the broker's caches and the OS page cache are warm
        # for everybody (the first JVM start reads the jars from disk).
        for spec_i, run in enumerate(VARIANTS.values()):
            spec = ("to_earliest", "to_latest")[spec_i % 2]
            move_group(kafka, targets[OPPOSITE[spec]])
            run(spec)
            check(kafka, targets[spec], "warm-up")
        times = {name: [] for name in VARIANTS}
        floors = {name: [] for name in FLOORS}
        specs = []
        names = list(VARIANTS)
        for round_no in range(args.runs):
            spec = ("to_earliest", "to_latest")[round_no % 2]
            specs.append(spec)
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for name in order:
                move_group(kafka, targets[OPPOSITE[spec]])
                elapsed = VARIANTS[name](spec)
                check(kafka, targets[spec], f"{name}, round {round_no + 1}")
                times[name].append(elapsed)
                print(f"round {round_no + 1}/{args.runs} {SPEC_FLAGS[spec]:<13} {name}: {elapsed:.3f}s", flush=True)
            for name, argv in FLOORS.items():
                floors[name].append(_timed(argv, name)[0])
    sources_after = source_state()
    changed = [name for name in ENGINE_SOURCES if sources_before[name] != sources_after[name]]
    text = report(args.runs, info, times, floors, specs, started, time.perf_counter() - t0, changed)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print()
    print(text)
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
