"""kafka-failover and kafka-failback end to end on a second, private stack (Kafka primary and standby
with MirrorMaker 2, ports 19192/29192 under .stack-failover), because these tests stop its primary
broker and its MirrorMaker: the main stack other tests use is never touched. The runs are real
Prefect flow runs (the main stack's Prefect server) answered through the gate."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.app import runs, starts
from mq_runbooks.base.clusters import load_clusters, parse_clusters
from mq_runbooks.base.errors import ParameterError, PreconditionError
from mq_runbooks.kit import journal
from mq_runbooks.flows.kafka_failover import dry_run
from mq_runbooks.flows.kafka_failover_plan import KafkaFailoverParameters
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.integrations.mirrormaker import MirrorState
from tests.flows.runbook_harness import finished, paused, runbook_env, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


REPO = Path(__file__).resolve().parents[2]
PRIMARY, STANDBY = "127.0.0.1:19192", "127.0.0.1:29192"
STACK_ENV = {"STACK_DIR": str(REPO / ".stack-failover"), "STACK_KAFKA_PRIMARY_PORT": "19192",
             "STACK_KAFKA_STANDBY_PORT": "29192"}
KAFKA_SERVICES = ("kafka-primary", "kafka-standby", "mirrormaker2")


def stack(command: str, *services: str) -> None:
    subprocess.run([str(REPO / "dev" / "stack"), command, *services], env={**os.environ, **STACK_ENV},
                   check=True, stdout=subprocess.DEVNULL)


def clusters_text(primary: str, standby: str, switch_file: Path) -> str:
    return f"""\
kafka:
  primary: {{bootstrap_servers: "{primary}", request_timeout_s: 5}}
  standby: {{bootstrap_servers: "{standby}", standby_of: primary,
             replication: {{kind: mirrormaker2, source_alias: primary}}}}
switches:
  kafka-clients:
    kind: file
    path: {switch_file}
    key: kafka.bootstrap_servers
    values: {{primary: "{primary}", standby: "{standby}"}}
"""


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory):
    """A clusters.yaml for the private stack (started here, stopped at the end) and its switch file."""
    stack("up", *KAFKA_SERVICES)
    directory = tmp_path_factory.mktemp("failover")
    switch_file = directory / "kafka-clients.json"
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": PRIMARY, "acks": "all"}}))
    path = directory / "clusters.yaml"
    path.write_text(clusters_text(PRIMARY, STANDBY, switch_file))
    try:
        yield path, switch_file
    finally:
        stack("down", *KAFKA_SERVICES)


@pytest.fixture
def env(runbook_env, monkeypatch, private_stack):
    monkeypatch.setenv("RUNBOOK_CLUSTERS", str(private_stack[0]))
    runbook_env("kafka-failback")
    return runbook_env("kafka-failover")


def produce(topic: str, first: int, count: int, partitions: int = 2) -> None:
    producer = Producer({"bootstrap.servers": PRIMARY, "acks": "all"})
    for i in range(first, first + count):
        producer.produce(topic, value=b"m%d" % i, partition=i % partitions)
    assert producer.flush(10) == 0


def consume(servers: str, group: str, topic: str, count: int, timeout: float = 30.0) -> list[str]:
    """Consume `count` values as `group` (subscribed, from its committed offsets); commit and leave."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(values) < count:
            for message in consumer.consume(count - len(values), 0.5):
                assert message.error() is None, message.error()
                values.append(message.value().decode())
        if values:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


def commit(group: str, offsets: dict[tuple[str, int], int], servers: str = PRIMARY) -> None:
    consumer = Consumer({"bootstrap.servers": servers, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    consumer.close()


def wait_for_checkpoints(groups_at: dict[str, dict[tuple[str, int], int]], timeout: float = 45.0) -> None:
    mirror = MirrorState({"bootstrap.servers": STANDBY}, source_alias="primary")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mirror.checkpoints(groups=list(groups_at))
        if all(found.get((g, f"primary.{t}", p)) is not None and found[(g, f"primary.{t}", p)].upstream_offset == o
               for g, offsets in groups_at.items() for (t, p), o in offsets.items()):
            return
        time.sleep(1)
    raise AssertionError(f"MM2 did not checkpoint {groups_at} within {timeout}s")


def start(settings, catalog, runbook_id, **raw) -> str:
    runbook = catalog.get(runbook_id)
    return starts.start_run(settings, runbook, runbook.validate_parameters(raw), requested_by="alice")


def approve(settings, catalog, run_id):
    view = wait_until(run_id, paused)
    runs.answer_gate(settings, catalog, run_id, True, "carol", "primary is gone")
    return view, wait_until(run_id, finished, timeout=90)


def test_failover_with_the_primary_stopped_then_failback(private_stack, env, unique):
    clusters_path, switch_file = private_stack
    settings, catalog = env
    topic, group, stale, missing = unique("orders"), unique("billing"), unique("stale"), unique("missing")
    before_any_record = time.strftime("%Y-%m-%dT%H:%M:%S.000", time.gmtime(time.time() - 1))
    with KafkaClient({"bootstrap.servers": PRIMARY}) as kafka:
        kafka.create_topic(topic, 2)
    produce(topic, 0, 300)
    consumed_on_primary = consume(PRIMARY, group, topic, 200)
    assert len(consumed_on_primary) == 200
    with KafkaClient({"bootstrap.servers": PRIMARY}) as kafka:
        committed = kafka.committed_offsets(group)
    commit(stale, {(topic, 0): 10})
    wait_for_checkpoints({group: committed, stale: {(topic, 0): 10}})

    # MM2 stops: what is produced now never reaches the standby, and checkpoints freeze.
    stack("down", "mirrormaker2")
    commit(stale, {(topic, 0): 20})
    commit(missing, {(topic, 1): 5})
    produce(topic, 300, 25)
    clusters = load_clusters(clusters_path)
    plan = dry_run(KafkaFailoverParameters(groups=[group, stale, missing]), clusters)
    assert plan.primary_reachable and plan.at_risk_exact and plan.messages_at_risk == 25
    by_key = {(p.group, p.partition): p for p in plan.partitions}
    assert {by_key[(group, p)].status for p in (0, 1)} == {"translated"}
    assert by_key[(group, 0)].messages_at_risk == 13 and by_key[(group, 1)].messages_at_risk == 12
    assert by_key[(stale, 0)].status == "stale" and "group committed 20" in by_key[(stale, 0)].reason
    assert by_key[(missing, 1)].status == "missing" and by_key[(missing, 1)].target_offset is None
    assert "Not translatable" in plan.markdown() and "(exact: the primary answered)" in plan.markdown()
    chosen = dry_run(KafkaFailoverParameters(groups=[missing], untranslatable="by_timestamp",
                                             fallback_to_datetime=before_any_record), clusters)
    (fallback,) = chosen.partitions
    assert (fallback.status, fallback.target_offset) == ("by_timestamp", 0)

    stack("down", "kafka-primary")
    blind = dry_run(KafkaFailoverParameters(groups=[group, missing], max_checkpoint_age_s=0.001), clusters)
    assert not blind.primary_reachable and blind.unknown_groups == (missing,)
    assert {p.status for p in blind.partitions} == {"stale"}
    assert "the primary cannot confirm it" in blind.partitions[0].reason
    assert "ESTIMATE" in blind.markdown()
    run_id = start(settings, catalog, "kafka-failover", groups=[group])
    view, done = approve(settings, catalog, run_id)
    assert done.succeeded, (done.message, done.entries[-3:])
    planned = journal.last(view.entries, "plan").data
    assert planned["primary_reachable"] is False and planned["at_risk_exact"] is False
    assert planned["messages_at_risk"] == 25, "the estimate is the lag last observed with the primary up"
    approval_text = journal.last(view.entries, "approval_requested")
    assert approval_text is not None
    assert json.loads(switch_file.read_text()) == {"kafka": {"bootstrap_servers": STANDBY, "acks": "all"}}
    targets = {p["partition"]: p["target_offset"] for p in planned["partitions"]}

    # The moved group resumes on the standby: nothing that reached it is missing, duplicates only from
    # MM2's conservative translation (target <= the exact position, within offset.lag.max = 100).
    resumed = consume(STANDBY, group, f"primary.{topic}", 300 - sum(targets.values()))
    replicated = {f"m{i}" for i in range(300)}
    assert replicated - set(consumed_on_primary) <= set(resumed), "no message missing"
    assert set(resumed) <= replicated
    for partition, target in targets.items():
        duplicates = [v for v in resumed if int(v[1:]) % 2 == partition and v in set(consumed_on_primary)]
        assert len(duplicates) == committed[(topic, partition)] - target <= 100
    assert len(resumed) == len(set(resumed))

    # Failback: the primary is back; the group continues there, the 25 at-risk messages delivered late.
    stack("up", "kafka-primary")
    back = start(settings, catalog, "kafka-failback", groups=[group], failover_run=run_id)
    view, done = approve(settings, catalog, back)
    assert done.succeeded, (done.message, done.entries[-3:])
    planned = journal.last(view.entries, "plan").data
    assert {p["how"] for p in planned["partitions"]} == {"exact"}
    assert sum(p["delivered_late"] for p in planned["partitions"]) == 25
    assert json.loads(switch_file.read_text())["kafka"]["bootstrap_servers"] == PRIMARY
    assert sorted(consume(PRIMARY, group, topic, 25)) == sorted(f"m{i}" for i in range(300, 325))
    with KafkaClient({"bootstrap.servers": PRIMARY}) as kafka:
        ends = kafka.log_offsets([(topic, 0), (topic, 1)])
        assert kafka.committed_offsets(group) == {k: v.log_end_offset for k, v in ends.items()}, "nothing left over"


def test_standby_unreachable_refuses_the_plan_with_the_reason(tmp_path, clusters):
    text = clusters_text(clusters.kafka_cluster("primary").bootstrap_servers, "127.0.0.1:9", tmp_path / "c.json")
    with pytest.raises(PreconditionError, match="the standby standby cannot take the clients: .*did not answer"):
        dry_run(KafkaFailoverParameters(groups=["billing"]), parse_clusters(text, "c.yaml", {}))
    assert not (tmp_path / "c.json").exists(), "nothing switched"


def test_bad_parameters_are_refused_naming_the_field(tmp_path, clusters):
    from mq_runbooks.base.catalog import load_catalog
    failover = load_catalog(REPO / "mq_runbooks" / "runbooks").get("kafka-failover")
    with pytest.raises(ParameterError, match="needs fallback_to_datetime"):
        failover.validate_parameters({"groups": ["g"], "untranslatable": "by_timestamp"})
    with pytest.raises(ParameterError, match="groups"):
        failover.validate_parameters({"groups": []})
    text = clusters_text("127.0.0.1:19092", "127.0.0.1:29092", tmp_path / "c.json")
    with pytest.raises(ParameterError, match=r"switch: no endpoint switch named 'nope'"):
        dry_run(KafkaFailoverParameters(groups=["g"], switch="nope"), parse_clusters(text, "c.yaml", {}))
    with pytest.raises(ParameterError, match="standby: 'primary' is not a MirrorMaker 2 standby"):
        dry_run(KafkaFailoverParameters(groups=["g"], standby="primary"), parse_clusters(text, "c.yaml", {}))
    with pytest.raises(ParameterError, match="fallback_to_datetime"):
        dry_run(KafkaFailoverParameters(groups=["g"], untranslatable="by_timestamp", fallback_to_datetime="yesterday"),
                parse_clusters(text, "c.yaml", {}))


def test_a_failed_verification_restores_the_switch(clusters, runbook_env, monkeypatch, tmp_path, unique):
    """On the main stack, primary up (nothing is stopped): the run commits the translated offsets,
    switches, the verification after the canary fails (injected), and the switch is back where it was."""
    primary = clusters.kafka_cluster("primary").bootstrap_servers
    switch_file = tmp_path / "kafka-clients.json"
    path = tmp_path / "clusters.yaml"
    path.write_text(clusters_text(primary, clusters.kafka_cluster("standby").bootstrap_servers, switch_file))
    monkeypatch.setenv("RUNBOOK_CLUSTERS", str(path))
    settings, catalog = runbook_env("kafka-failover", RUNBOOK_INJECT_FAULT="verify")
    topic, group = unique("canary-orders"), unique("canary-group")
    with KafkaClient({"bootstrap.servers": primary}) as kafka:
        kafka.create_topic(topic, 1)
    producer = Producer({"bootstrap.servers": primary})
    for i in range(20):
        producer.produce(topic, value=b"%d" % i)
    producer.flush()
    commit(group, {(topic, 0): 10}, servers=primary)
    mirror = MirrorState({"bootstrap.servers": clusters.kafka_cluster("standby").bootstrap_servers},
                         source_alias="primary")
    deadline = time.monotonic() + 45
    while not mirror.checkpoints(groups=[group]) and time.monotonic() < deadline:
        time.sleep(1)
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": primary}}))
    view, done = approve(settings, catalog, start(settings, catalog, "kafka-failover", groups=[group]))
    assert not done.succeeded
    assert journal.last(view.entries, "plan").data["at_risk_exact"] is True
    kinds = [entry.kind for entry in done.entries]
    assert kinds.index("approval") < kinds.index("snapshot") < kinds.index("action") < kinds.index("rollback")
    rollback = journal.last(done.entries, "rollback").data
    assert rollback["restored"] is True and rollback["switch_restored"] is True
    assert json.loads(switch_file.read_text()) == {"kafka": {"bootstrap_servers": primary}}
