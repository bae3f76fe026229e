"""The local stack as dev/stack runs it: every service answers, `up` is idempotent, Kafka's own tools
run with the cached classpath, MirrorMaker 2 really replicates primary -> standby, and so does the Redis replica."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from mq_runbooks.integrations.kafka import KafkaClient
from tests.integrations.test_rabbitmq import eventually

REPO = Path(__file__).resolve().parents[2]


def dev(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "dev" / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)


def test_status_lists_every_service_up(clusters):
    result = dev("stack", "status")
    assert result.returncode == 0, result.stdout
    for service in ("kafka-primary", "kafka-standby", "mirrormaker2", "rabbitmq-primary", "rabbitmq-standby",
                    "redis-primary", "redis-replica", "artemis-primary", "artemis-backup", "rocketmq-namesrv",
                    "rocketmq-broker", "rocketmq-proxy", "prefect"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(service))
        assert " up " in line, line


def test_status_shows_the_artemis_pairs_ha_roles(clusters):
    result = dev("stack", "status", "artemis-primary", "artemis-backup")
    assert result.returncode == 0, result.stdout
    primary, backup = result.stdout.splitlines()
    assert primary.startswith("artemis-primary") and primary.endswith("(active, backup in sync)"), primary
    assert backup.startswith("artemis-backup") and backup.endswith("(backup, in sync)"), backup


def test_up_is_idempotent_when_everything_runs(clusters):
    result = dev("stack", "up")
    assert result.returncode == 0
    assert "already up" in result.stdout


def test_unknown_command_and_service_are_refused():
    assert dev("stack", "restart").returncode == 2
    result = dev("stack", "down", "zookeeper")
    assert result.returncode != 0 and "unknown service zookeeper" in result.stderr


def test_kafka_run_class_runs_kafkas_own_tools(clusters, unique):
    topic = unique("tools")
    with KafkaClient(clusters.kafka_cluster("primary").client_config()) as kafka:
        kafka.create_topic(topic, 2)
    result = dev("kafka-run-class", "org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
                 clusters.kafka_cluster("primary").bootstrap_servers, "--describe", "--topic", topic)
    assert result.returncode == 0, result.stderr
    assert f"Topic: {topic}" in result.stdout and "PartitionCount: 2" in result.stdout


def test_mirrormaker_replicates_primary_topics_to_the_standby(clusters, unique):
    topic = unique("mirrored")
    primary = clusters.kafka_cluster("primary").client_config()
    standby = clusters.kafka_cluster("standby").client_config()
    with KafkaClient(primary) as kafka:
        kafka.create_topic(topic, 1)
    producer = Producer(primary)
    for i in range(5):
        producer.produce(topic, value=f"event-{i}".encode())
    producer.flush()
    consumer = Consumer({**standby, "group.id": unique("mm2-check"), "auto.offset.reset": "earliest"})
    seen: list[str] = []
    deadline = time.monotonic() + 60  # MM2 refreshes its topic list every 5 s
    try:
        while time.monotonic() < deadline and len(seen) < 5:
            if f"primary.{topic}" not in KafkaClient(standby).list_topics():
                time.sleep(1)
                continue
            if not consumer.assignment():
                consumer.subscribe([f"primary.{topic}"])
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen.append(message.value().decode())
    finally:
        consumer.close()
    assert seen == [f"event-{i}" for i in range(5)]


def test_redis_replica_replicates_the_primary(clusters, unique):
    key = unique("replicated")
    primary = clusters.redis_cluster("primary").client()
    replica = clusters.redis_cluster("replica").client()
    try:
        assert replica.info("replication")["role"] == "slave"
        entry_id = primary.xadd(key, {"event": "paid"})
        seen = eventually(lambda: replica.xrange(key) or None, f"{key} on the replica", timeout_s=10)
        assert seen == [(entry_id, {b"event": b"paid"})]
    finally:
        primary.delete(key)
        primary.close()
        replica.close()


@pytest.mark.slow  # a private Prefect server, started twice
def test_the_prefect_database_is_its_users_only():
    """The SQLite database holds every run's parameters and journal: dev/stack's Prefect server
    creates it (and its -wal, -shm) 0600, and makes one created before 0600 when it starts."""
    import stat

    from tests.private_prefect import private_prefect

    with private_prefect() as server:
        home = server.home / "prefect"
        databases = sorted(home.glob("prefect.db*"))
        assert databases and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in databases), \
            {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in databases}
        server.stack("down", "prefect")
        for path in databases:
            path.chmod(0o644)  # as a stack made before kept it
        server.stack("up", "prefect")
        assert {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in home.glob("prefect.db*")} == {
            path.name: "0o600" for path in home.glob("prefect.db*")}
