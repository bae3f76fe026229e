"""kafka-failover and kafka-failback on the kit driver, on the main stack (the primary stays up; the
clients' switch is a private file): unknown groups are refused, fenced steps say what changed, the
snapshot's restore command really restores. (The plans without a broker: test_kafka_failover_plans.py.)"""
from __future__ import annotations

import json
import re
import shlex
import time

import pytest
from confluent_kafka import Producer

from mq_runbooks.app import runs, starts
from mq_runbooks.flows.kafka_failover_plan import FailoverPlan
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.integrations.mirrormaker import MirrorState
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, wait_until  # noqa: F401 (fixture)
from tests.flows.test_kafka_failover import approve, clusters_text, commit, start

pytestmark = pytest.mark.slow  # real runs on the stack: dev/test --fast leaves them out

@pytest.fixture
def main_stack(clusters, tmp_path, monkeypatch):
    """(primary, standby, switch file): a clusters.yaml of the main stack whose switch is a private file
    pointing at the primary."""
    primary = clusters.kafka_cluster("primary").bootstrap_servers
    standby = clusters.kafka_cluster("standby").bootstrap_servers
    switch_file = tmp_path / "kafka-clients.json"
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": primary}}))
    path = tmp_path / "clusters.yaml"
    path.write_text(clusters_text(primary, standby, switch_file))
    monkeypatch.setenv("RUNBOOK_CLUSTERS", str(path))
    return primary, standby, switch_file


def checkpointed_group(primary: str, standby: str, topic: str, group: str, at: int = 10) -> None:
    """`topic` (1 partition, 20 records) and `group` committed at `at` on the primary, checkpointed by MM2."""
    with KafkaClient({"bootstrap.servers": primary}) as kafka:
        if topic not in kafka.list_topics():
            kafka.create_topic(topic, 1)
    producer = Producer({"bootstrap.servers": primary})
    for i in range(20):
        producer.produce(topic, value=b"%d" % i)
    assert producer.flush(10) == 0
    commit(group, {(topic, 0): at}, servers=primary)
    mirror = MirrorState({"bootstrap.servers": standby}, source_alias="primary")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = mirror.checkpoints(groups=[group]).get((group, f"primary.{topic}", 0))
        if found is not None and found.upstream_offset == at:
            return
        time.sleep(1)
    raise AssertionError(f"MM2 did not checkpoint {group} at {at} within 60s")


def committed(servers: str, group: str) -> dict[tuple[str, int], int]:
    with KafkaClient({"bootstrap.servers": servers}) as kafka:
        return kafka.committed_offsets(group)


# -- unknown groups are missing targets ----------------------------------------------------------------

@pytest.mark.parametrize("runbook_id, where", [("kafka-failover", "primary"), ("kafka-failback", "standby")])
def test_an_unknown_group_is_refused_by_the_cli_before_a_run_exists(clusters, runbook_id, where, unique):
    group = unique("no-such-group")
    for command in ("plan", "run"):
        result = runbook(command, runbook_id, "-p", f"groups={group}", timeout=120)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"group '{group}' (no committed offsets on {where} and no members)" in result.stderr
        assert "started run" not in result.stdout and "Traceback" not in result.stderr


def test_an_unknown_group_in_a_run_is_refused_and_never_switches(main_stack, runbook_env, unique):
    primary, standby, switch_file = main_stack
    runbook_env("kafka-failover")
    settings, catalog = runbook_env("kafka-failback")
    group = unique("no-such-group")
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": standby}}))  # as after a failover
    back = wait_until(start(settings, catalog, "kafka-failback", groups=[group]), finished, timeout=90)
    switch_file.write_text(json.dumps({"kafka": {"bootstrap_servers": primary}}))
    over = wait_until(start(settings, catalog, "kafka-failover", groups=[group]), finished, timeout=120)
    for view, where, switch in ((back, "standby", standby), (over, "primary", primary)):
        outcome = journal.last(view.entries, "outcome")
        assert not view.succeeded and outcome.data["outcome"] == "refused", outcome
        assert f"group '{group}' (no committed offsets on {where} and no members)" in outcome.summary
        assert "approval_requested" not in kinds(view) and "action" not in kinds(view)
    assert json.loads(switch_file.read_text())["kafka"]["bootstrap_servers"] == primary, "never switched"


def test_a_failback_that_changes_nothing_ends_unchanged_without_asking(main_stack, runbook_env, unique):
    """The group exists on the standby, but only on a standby-only topic (nothing to move back), and the
    switch already points at the primary: nothing to approve, nothing switched."""
    primary, standby, switch_file = main_stack
    settings, catalog = runbook_env("kafka-failback")
    topic, group = unique("standby-only"), unique("stayed")
    with KafkaClient({"bootstrap.servers": standby}) as kafka:
        kafka.create_topic(topic, 1)
    commit(group, {(topic, 0): 0}, servers=standby)
    view = wait_until(start(settings, catalog, "kafka-failback", groups=[group]), finished, timeout=90)
    outcome = journal.last(view.entries, "outcome")
    assert view.succeeded and outcome.data["outcome"] == "unchanged", outcome
    assert "0 partition(s) of 1 group(s) back to primary" in outcome.summary
    assert "approval_requested" not in kinds(view) and "action" not in kinds(view)
    assert json.loads(switch_file.read_text())["kafka"]["bootstrap_servers"] == primary


# -- fenced steps, the snapshot and its restore command ------------------------------------------------------

def test_a_failure_after_the_offsets_were_committed_says_what_changed_and_restores(main_stack, runbook_env, unique):
    primary, standby, switch_file = main_stack
    settings, catalog = runbook_env("kafka-failover", RUNBOOK_INJECT_FAULT="fail-before:switch")
    topic, group = unique("fenced-orders"), unique("fenced-group")
    checkpointed_group(primary, standby, topic, group)
    commit(group, {(f"primary.{topic}", 0): 2}, servers=standby)  # where it was on the standby before
    view, done = approve(settings, catalog, start(settings, catalog, "kafka-failover", groups=[group]))
    outcome = journal.last(done.entries, "outcome")
    assert not done.succeeded and outcome.data["outcome"] == "failed"
    step = f"committed 1 offset(s) of {group} on standby"
    assert outcome.data["changed"] == [step], outcome
    assert "failed before changing anything" not in outcome.summary and step in outcome.summary
    assert [e.data["step"] for e in done.entries if e.kind == "action"] == [f"offsets:{group}"]
    rollback = journal.last(done.entries, "rollback").data
    assert rollback["restored"] is True and rollback["offsets_restored"] == 1 and rollback["switch_restored"] is False
    assert committed(standby, group) == {(f"primary.{topic}", 0): 2}, "the standby offset is back"
    assert json.loads(switch_file.read_text())["kafka"]["bootstrap_servers"] == primary


def test_the_restore_command_of_the_snapshot_puts_the_offsets_back(main_stack, runbook_env, unique):
    primary, standby, switch_file = main_stack
    runbook_env("kafka-replay")
    settings, catalog = runbook_env("kafka-failover")
    topic, groups = unique("restore-orders"), [unique("restore-a"), unique("restore-b")]
    before = {}
    for index, group in enumerate(groups):
        checkpointed_group(primary, standby, topic, group)
        # past the translated target (MM2 translates conservatively: at most the exact position 10)
        before[group] = {(f"primary.{topic}", 0): 15 + index}
        commit(group, before[group], servers=standby)
    view, done = approve(settings, catalog, start(settings, catalog, "kafka-failover", groups=groups))
    assert done.succeeded, (done.message, done.entries[-3:])
    assert json.loads(switch_file.read_text())["kafka"]["bootstrap_servers"] == standby
    assert all(committed(standby, group) != before[group] for group in groups), "the failover moved them"
    outcome = journal.last(done.entries, "outcome").data
    assert outcome["changed"] == [f"committed 1 offset(s) of {g} on standby" for g in groups] + [
        f"switch kafka-clients: {primary} -> {standby}"]
    plan = journal.last(done.entries, "plan").data  # what `runbook status RUN --plan` renders
    assert plan["columns"] == list(FailoverPlan.COLUMNS) and [row[0] for row in plan["rows"]] == sorted(groups)

    snapshot = journal.last(done.entries, "snapshot").data
    saved = {s["group"]: s for s in snapshot["group_snapshots"]}
    assert sorted(saved) == sorted(groups)
    for group in groups:  # one --export CSV (topic,partition,offset) per group
        (offsets,) = before[group].items()
        assert open(saved[group]["path"]).read() == f"{offsets[0][0]},{offsets[0][1]},{offsets[1]}\n"
    command = snapshot["restore_command"]
    assert f"put switch kafka-clients (file {switch_file} key kafka.bootstrap_servers) back to '{primary}'" in command
    replays = re.findall(r"runbook run kafka-replay (.*?)(?:;|$)", command)
    assert len(replays) == 2
    for replay in replays:  # run each printed command's parameters as a kafka-replay run
        args = shlex.split(replay)
        raw = dict(args[i + 1].split("=", 1) for i in range(0, len(args), 2) if args[i] == "-p")
        replay_run = starts.start_run(settings, catalog.get("kafka-replay"),
                                    catalog.get("kafka-replay").validate_parameters(raw), requested_by="alice")
        wait_until(replay_run, paused)
        runs.answer_gate(settings, catalog, replay_run, True, "carol", "restore after the failover")
        assert wait_until(replay_run, finished).succeeded
    for group in groups:
        assert committed(standby, group) == before[group], "the offsets are back"
