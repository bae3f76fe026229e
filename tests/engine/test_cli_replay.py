"""`runbook plan|run kafka-replay` from the command line: the export equals the Java tool's, and bad
input is refused (exit 2, naming the parameter) before anything exists or changes."""
from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.integrations.kafka import KafkaClient
from tests.engine.test_cli import REPO, runbook


@pytest.fixture(scope="module")
def committed_group(clusters):
    config = clusters.kafka_cluster("primary").client_config()
    import uuid
    topic, group = f"cli-replay-{uuid.uuid4().hex[:8]}", f"cli-group-{uuid.uuid4().hex[:8]}"
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, 4)
    producer = Producer(config)
    for i in range(40):
        producer.produce(topic, value=b"x", partition=i % 4)
    producer.flush()
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, 3 + p) for p in range(4)], asynchronous=False)
    consumer.close()
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
