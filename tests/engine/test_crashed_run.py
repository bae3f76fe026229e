"""A run whose process dies gets its postmortem draft (outcome crashed) when someone looks at it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from mq_runbooks.app import runs
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.kit.postmortem_store import find_by_run
from mq_runbooks.base.settings import Settings
from mq_runbooks.integrations.kafka import KafkaClient


def paused_replay_run(clusters, unique, prefix: str) -> tuple[str, dict, str, str]:
    """A kafka-replay run started as `runbook run` starts it, waiting at its gate: (run id, kafka config,
    topic, group); the group is committed at the end of a one-partition topic of 2 records."""
    config = clusters.kafka_cluster("primary").client_config()
    topic, group = unique(prefix), unique(f"{prefix}group")
    with KafkaClient(config) as kafka:
        kafka.create_topic(topic, 1)
    producer = Producer(config)
    producer.produce(topic, b"x")
    producer.produce(topic, b"y")
    producer.flush()
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    consumer.close()
    settings = Settings.from_environ()
    runbook = load_catalog(settings.catalog).get("kafka-replay")
    run_id = runs.start_run(settings, runbook, runbook.validate_parameters(
        {"cluster": "primary", "group": group, "to_earliest": "true"}), requested_by="alice")
    deadline = time.monotonic() + 60
    while runs.read_run(run_id).state_type != "PAUSED":
        assert time.monotonic() < deadline, "the run never reached its gate"
        time.sleep(0.3)
    return run_id, config, topic, group


def kill_executor(run_id: str, sig: int) -> None:
    executor = subprocess.run(["pgrep", "-f", f"mq_runbooks.app.executor {run_id}"], capture_output=True, text=True)
    assert executor.stdout.split(), "the run's executor process was not found"
    for pid in executor.stdout.split():
        os.kill(int(pid), sig)


def test_status_of_a_crashed_run_writes_its_draft(clusters, unique, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_POSTMORTEM_DIR", str(tmp_path / "postmortems"))
    run_id, config, topic, group = paused_replay_run(clusters, unique, "crash")
    settings = Settings.from_environ()
    kill_executor(run_id, signal.SIGTERM)  # the process dies while the run waits at the gate
    deadline = time.monotonic() + 60
    while not runs.read_run(run_id).finished:
        assert time.monotonic() < deadline, "the run was never marked as ended"
        time.sleep(0.3)
    assert runs.read_run(run_id).state_type == "CRASHED"

    shown = subprocess.run([str(Path(sys.executable).parent / "runbook"), "status", run_id],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    draft = find_by_run(settings.postmortem_dir, "kafka-replay", run_id)
    assert draft is not None and draft.meta["outcome"] == "crashed"
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 2}, "nothing was changed"


def test_a_killed_run_is_marked_crashed_by_its_missing_heartbeats_and_concluded(clusters, unique, tmp_path,
                                                                                monkeypatch):
    """SIGKILL leaves Prefect nothing to notice: the server's automation (kit/crashes.py) crashes the run
    once its heartbeats stop, and the sweep `runbook serve` runs gives it its outcome and draft."""
    from mq_runbooks.kit import journal
    from mq_runbooks.kit.crashes import HEARTBEAT_S, ZOMBIE_AFTER_S, conclude_crashed

    monkeypatch.setenv("RUNBOOK_POSTMORTEM_DIR", str(tmp_path / "postmortems"))
    run_id, config, topic, group = paused_replay_run(clusters, unique, "killed")
    settings = Settings.from_environ()
    kill_executor(run_id, signal.SIGKILL)

    deadline = time.monotonic() + ZOMBIE_AFTER_S + 3 * HEARTBEAT_S + 60
    while runs.read_run(run_id).state_type != "CRASHED":
        assert time.monotonic() < deadline, f"still {runs.read_run(run_id).state} after the heartbeats stopped"
        time.sleep(2)
    assert run_id in conclude_crashed()
    assert run_id not in conclude_crashed(), "a crashed run is concluded once"
    outcome = journal.last(runs.read_run(run_id).entries, "outcome")
    assert outcome.data["outcome"] == "crashed" and outcome.summary.startswith("crashed before changing anything")
    draft = find_by_run(settings.postmortem_dir, "kafka-replay", run_id)
    assert draft is not None and draft.meta["outcome"] == "crashed"
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 2}, "nothing was changed"
