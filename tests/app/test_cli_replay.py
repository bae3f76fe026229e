"""`runbook plan|run kafka-replay` from the command line: the export equals the Java tool's, and bad
input is refused (exit 2, naming the parameter) before anything exists or changes."""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.integrations.kafka import KafkaClient
from tests.app.test_cli import REPO, runbook
from tests.flows.runbook_harness import finished, paused, wait_until


pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


def make_committed_group(config: dict, topic: str, group: str, partitions: int, messages: int,
                         committed: int) -> None:
    """A topic with `messages` spread over its partitions and a group committed at `committed + p`."""
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, partitions)
    producer = Producer(config)
    for i in range(messages):
        producer.produce(topic, value=b"x", partition=i % partitions)
    producer.flush()
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, committed + p) for p in range(partitions)], asynchronous=False)
    consumer.close()


@pytest.fixture(scope="module")
def committed_group(clusters):
    config = clusters.kafka_cluster("primary").client_config()
    import uuid
    topic, group = f"cli-replay-{uuid.uuid4().hex[:8]}", f"cli-group-{uuid.uuid4().hex[:8]}"
    make_committed_group(config, topic, group, partitions=4, messages=40, committed=3)
    return config, topic, group


def test_plan_export_equals_the_java_tools_dry_run_export(committed_group):
    config, topic, group = committed_group
    ours = runbook("plan", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}",
                   "-p", f"topic={topic}:0,2,3", "-p", "shift_by=2", "--export")
    assert ours.returncode == 0, ours.stderr
    java = subprocess.run(
        [str(REPO / "dev" / "kafka-run-class"), "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
         "--bootstrap-server", config["bootstrap.servers"], "--group", group, "--reset-offsets",
         "--topic", f"{topic}:0,2,3", "--shift-by", "2", "--dry-run", "--export"],
        capture_output=True, text=True, timeout=60)
    assert java.returncode == 0, java.stderr
    assert ours.stdout == java.stdout
    assert sorted(line for line in ours.stdout.splitlines() if line) == [f"{topic},0,5", f"{topic},2,7", f"{topic},3,8"]


@pytest.mark.parametrize("params, expected", [
    (["shift_by=1", "to_earliest=true"], "give exactly one reset spec"),
    ([], "give exactly one reset spec"),
    (["to_datetime=yesterday"], "to_datetime"),
    (["by_duration=15 minutes"], "by_duration"),
    (["to_offset=ten"], "to_offset: Input should be a valid integer"),
    (["to_earliest=true", "topic=no-such-topic-xyz"], "no-such-topic-xyz"),
    (["to_earliest=true", "colour=red"], "colour: unknown parameter"),
])
def test_bad_input_is_refused_naming_the_parameter(committed_group, params, expected):
    config, topic, group = committed_group
    before = KafkaClient(config).committed_offsets(group)
    result = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}",
                     *[arg for p in params for arg in ("-p", p)])
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and "started run" not in result.stdout
    assert KafkaClient(config).committed_offsets(group) == before


def test_unknown_cluster_and_unknown_group_are_bad_input():
    unknown_cluster = runbook("plan", "kafka-replay", "-p", "cluster=primry", "-p", "group=g", "-p", "to_latest=true")
    assert unknown_cluster.returncode == 2
    assert "no kafka cluster named 'primry'" in unknown_cluster.stderr and "primary, standby" in unknown_cluster.stderr
    unknown_group = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", "group=no-such-group-xyz",
                            "-p", "to_latest=true")
    assert unknown_group.returncode == 2, unknown_group.stderr
    assert "no-such-group-xyz" in unknown_group.stderr


def _run_and_approve(*args: str) -> dict:
    """`runbook run ... --as carol`, then `runbook approve RUN --as alice` at the gate; its final status."""
    started = runbook("run", *args, "--as", "carol", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    wait_until(run_id, paused)  # in-process: polling through the CLI would cost an interpreter a poll
    approved = runbook("approve", run_id, "--as", "alice")
    assert approved.returncode == 0, approved.stderr
    wait_until(run_id, finished)
    return json.loads(runbook("status", run_id, "--json").stdout)


def test_status_plan_shows_the_whole_plan_and_the_printed_restore_command_restores(clusters, unique):
    config = clusters.kafka_cluster("primary").client_config()
    topic, group = unique("cli-restore"), unique("cli-restore-group")
    make_committed_group(config, topic, group, partitions=3, messages=30, committed=6)
    before = KafkaClient(config).committed_offsets(group)

    status = _run_and_approve("kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true")
    assert status["state"] == "Completed", status["message"]
    assert set(KafkaClient(config).committed_offsets(group).values()) == {0}

    shown = runbook("status", status["id"], "--plan")
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    # Piped: the plan's table is tab-separated, every row whole, no box drawn at 80 columns.
    lines = shown.stdout.splitlines()
    header = lines.index("topic\tpartition\tcurrent\ttarget\tlog start\tlog end\treplayed (+) / skipped (-)")
    assert [line.split("\t")[:4] for line in lines[header + 1:header + 4]] == [
        [topic, str(partition), str(6 + partition), "0"] for partition in range(3)]
    assert "│" not in shown.stdout

    snapshot = next(e for e in status["journal"] if e["kind"] == "snapshot")
    command = shlex.split(snapshot["data"]["restore_command"])
    assert command[:3] == ["runbook", "run", "kafka-replay"]
    planned = runbook("plan", *command[2:], "--export")  # what the restore would commit, changing nothing
    assert planned.returncode == 0, planned.stderr
    assert sorted(line for line in planned.stdout.splitlines() if line) == sorted(
        f"{t},{p},{o}" for (t, p), o in before.items())
    restored = _run_and_approve(*command[2:])
    assert restored["state"] == "Completed", restored["message"]
    assert KafkaClient(config).committed_offsets(group) == before


def test_run_wait_exits_1_when_the_run_is_rejected(clusters, unique):
    """A rejection is an expected outcome (no error in the run's log), yet no success: exit 1."""
    import os

    from tests.app.test_cli import RUNBOOK

    config = clusters.kafka_cluster("primary").client_config()
    topic, group = unique("cli-reject"), unique("cli-reject-group")
    make_committed_group(config, topic, group, partitions=2, messages=10, committed=2)
    waiting = subprocess.Popen([str(RUNBOOK), "run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}",
                                "-p", "to_earliest=true", "--as", "carol", "--wait"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "200"})
    try:
        first = waiting.stdout.readline()  # "started run ID of kafka-replay (as carol)"
        run_id = first.split()[2]
        wait_until(run_id, paused)
        rejected = runbook("reject", run_id, "--as", "alice", "--reason", "wrong group")
        assert rejected.returncode == 0, rejected.stderr
        out, err = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 1, first + out + err
    assert "Rejected" in out and "Traceback" not in out + err, out + err
