"""Benchmark: time from approval to the first message consumed on the standby, kafka-failover
runbook against the same failover done by hand, in the same run on the same clusters.

    .venv/bin/python bench/kafka_failover.py [--rounds 5] [--partitions 4] [--clusters clusters.yaml]

Each round: a fresh topic of 1,000 messages per partition on the primary, a group that committed
half of each partition, MM2 has checkpointed it (waited for, not timed). A client waits for the
endpoint switch (a JSON file) to name the standby, then consumes as the group from its committed
offsets; the clock stops at its first message.
  runbook   the clock starts when the gate is answered (runs.answer_gate) on a run already paused
            at approval; the run re-plans, snapshots, commits the translated offsets, checks the
            group resumes, switches, and proves it with a canary.
  by hand   the clock starts when the operator runs
            `kafka-consumer-groups --reset-offsets --from-file translated.csv --execute` on the
            standby, then edits the switch file. The translated offsets are handed to the operator
            for free (there is no CLI for MM2's translation; by hand they come from
            RemoteClusterUtils in a small Java program), so this favours the reference.
Uses the local stack (primary up; nothing is stopped). The results go to stdout as Markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")

from mq_runbooks.app import runs, starts  # noqa: E402
from mq_runbooks.base.catalog import load_catalog  # noqa: E402
from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from mq_runbooks.base.settings import Settings  # noqa: E402
from mq_runbooks.kit import journal  # noqa: E402
from mq_runbooks.flows.kafka_failover_plan import KafkaFailoverParameters, plan_failover  # noqa: E402
from mq_runbooks.integrations.kafka import KafkaClient  # noqa: E402
from mq_runbooks.integrations.mirrormaker import MirrorState  # noqa: E402

PER_PARTITION = 1000


def prepare(primary: str, standby: str, partitions: int) -> tuple[str, str]:
    """A topic and a group half-way through it, checkpointed by MM2."""
    topic, group = f"bench-failover-{uuid.uuid4().hex[:8]}", f"bench-group-{uuid.uuid4().hex[:8]}"
    with KafkaClient({"bootstrap.servers": primary}) as kafka:
        kafka.create_topic(topic, partitions)
    producer = Producer({"bootstrap.servers": primary, "linger.ms": 5})
    for i in range(PER_PARTITION * partitions):
        producer.produce(topic, value=b"x" * 100, partition=i % partitions)
    producer.flush()
    consumer = Consumer({"bootstrap.servers": primary, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, p, PER_PARTITION // 2) for p in range(partitions)],
                    asynchronous=False)
    consumer.close()
    mirror = MirrorState({"bootstrap.servers": standby}, source_alias="primary")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = mirror.checkpoints(groups=[group])
        if len(found) == partitions and {c.upstream_offset for c in found.values()} == {PER_PARTITION // 2}:
            return topic, group
        time.sleep(0.5)
    raise SystemExit(f"MM2 did not checkpoint {group} within 60 s")


def client_first_message(switch_file: Path, standby: str, group: str, replica: str, done: list[float]) -> None:
    """A client restarted by its config agent: waits for the switch, then consumes as the group."""
    while json.loads(switch_file.read_text())["kafka"]["bootstrap_servers"] != standby:
        time.sleep(0.005)
    consumer = Consumer({"bootstrap.servers": standby, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "error"})
    consumer.subscribe([replica])
    try:
        while True:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                done.append(time.perf_counter())
                return
    finally:
        consumer.close()


def timed_client(switch_file: Path, standby: str, group: str, replica: str) -> tuple[threading.Thread, list[float]]:
    done: list[float] = []
    thread = threading.Thread(target=client_first_message, args=(switch_file, standby, group, replica, done))
    thread.start()
    return thread, done


def by_runbook(settings, catalog, switch_file: Path, primary: str, standby: str, topic: str, group: str) -> float:
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": primary}}))
    runbook = catalog.get("kafka-failover")
    run_id = starts.start_run(settings, runbook, runbook.validate_parameters({"groups": [group]}), requested_by="bench")
    while not (runs.read_run(run_id).state_type == "PAUSED"
               and journal.last(runs.read_run(run_id).entries, "approval_requested")):
        time.sleep(0.2)
    thread, done = timed_client(switch_file, standby, group, f"primary.{topic}")
    started = time.perf_counter()
    runs.answer_gate(settings, catalog, run_id, True, "carol", "bench")
    thread.join(120)
    while not runs.read_run(run_id).finished:
        time.sleep(0.2)
    assert runs.read_run(run_id).succeeded, runs.read_run(run_id).message
    return done[0] - started


def by_hand(clusters, switch_file: Path, primary: str, standby: str, topic: str, group: str) -> float:
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": primary}}))
    plan = plan_failover(KafkaFailoverParameters(groups=[group]), clusters, Path(tempfile.mkdtemp()))
    csv = Path(tempfile.mkdtemp()) / "translated.csv"
    csv.write_text("".join(f"{p.replica},{p.partition},{p.target_offset}\n" for p in plan.partitions))
    thread, done = timed_client(switch_file, standby, group, f"primary.{topic}")
    started = time.perf_counter()
    subprocess.run([str(REPO / "dev" / "kafka-run-class"), "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                    "--bootstrap-server", standby, "--group", group, "--reset-offsets", "--from-file", str(csv),
                    "--execute"], check=True, stdout=subprocess.DEVNULL)
    edited = switch_file.with_suffix(".edit")  # the operator's edit lands whole (as a config agent's would)
    edited.write_text(json.dumps({"kafka": {"bootstrap_servers": standby}}))
    edited.replace(switch_file)
    thread.join(120)
    return done[0] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--clusters", default=str(REPO / "clusters.yaml"))
    args = parser.parse_args()
    base = load_clusters(Path(args.clusters))
    primary, standby = base.kafka_cluster("primary").bootstrap_servers, base.kafka_cluster("standby").bootstrap_servers
    work = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    switch_file = work / "kafka-clients.json"
    config = Path(args.clusters).read_text().split("switches:")[0] + f"""switches:
  kafka-clients: {{kind: file, path: {switch_file}, key: kafka.bootstrap_servers,
                  values: {{primary: "{primary}", standby: "{standby}"}}}}
"""
    (work / "clusters.yaml").write_text(config)
    (work / "runbooks").mkdir()
    (work / "runbooks" / "kafka-failover.yaml").write_text((REPO / "mq_runbooks" / "runbooks" / "kafka-failover.yaml").read_text())
    os.environ.update(RUNBOOK_CLUSTERS=str(work / "clusters.yaml"), RUNBOOK_CATALOG=str(work / "runbooks"),
                      RUNBOOK_SNAPSHOT_DIR=str(work / "snapshots"))
    settings = Settings.from_environ()
    catalog, clusters = load_catalog(settings.catalog), load_clusters(settings.clusters)
    results: dict[str, list[float]] = {"runbook": [], "by hand": []}
    for round_number in range(args.rounds):
        topic, group = prepare(primary, standby, args.partitions)
        results["runbook"].append(by_runbook(settings, catalog, switch_file, primary, standby, topic, group))
        topic, group = prepare(primary, standby, args.partitions)
        results["by hand"].append(by_hand(clusters, switch_file, primary, standby, topic, group))
        print(f"round {round_number + 1}: runbook {results['runbook'][-1]:.2f}s, by hand {results['by hand'][-1]:.2f}s",
              file=sys.stderr)
    runbook, hand = statistics.median(results["runbook"]), statistics.median(results["by hand"])
    print(f"| way | median s | rounds (s) |\n|---|---:|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"\nratio runbook / by hand: {runbook / hand:.2f} ({args.rounds} rounds, {args.partitions} partitions)")


if __name__ == "__main__":
    main()
