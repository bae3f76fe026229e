"""rocketmq-reset-offset end to end on the stack's real name server, broker and proxy: real runs
answered at the real gate, held against RocketMQ's own `mqadmin consumerProgress` and
`mqadmin resetOffsetByTime`, and read back by a consumer of the group."""
from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from mq_runbooks.app import runs
from mq_runbooks.flows.replay_spec import parse_datetime
from mq_runbooks.integrations.rocketmq import RocketMQAdmin
from mq_runbooks.integrations.rocketmq_grpc import GrpcProducer
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import finished, kinds, paused, runbook_env, start_runbook, wait_until  # noqa: F401
from tests.rocketmq_support import (
    consume, consumer_progress, make_group, make_topic, mqadmin, produce, rocketmq_primary,
)

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out

RUNBOOK = "rocketmq-reset-offset"
GAP_S = 45  # between the older and the newer messages: by_duration lands inside it however slow the run starts (20 s seen)


@pytest.fixture(scope="module")
def primary():
    return rocketmq_primary()


def test_a_reset_by_duration_replays_exactly_the_newer_messages_as_mqadmin_would(primary, unique, runbook_env):
    topic, group, twin = unique("orders"), unique("billing"), unique("billing-twin")
    make_topic(primary, topic, 8)
    for g in (group, twin):
        make_group(primary, g)
    older = [f"old-{i}" for i in range(40)]
    produce(primary, topic, older)
    last_old_ms = int(time.time() * 1000)
    time.sleep(GAP_S)
    newer = [f"new-{i}" for i in range(24)]
    with GrpcProducer.from_cluster(primary, [topic]) as producer:  # through the proxy, as applications send
        for key in newer:
            producer.send(topic, f"body of {key}".encode(), keys=[key], tag="test")
    for g in (group, twin):
        assert sorted(m.keys for m in consume(primary, g, topic)) == sorted(older + newer)
    before = consumer_progress(group)
    assert before and all(diff == 0 for _, _, diff in before.values()), before

    duration_s = int((time.time() * 1000 - last_old_ms) / 1000) - 3  # just after the older: the run plans later
    settings, catalog = runbook_env(RUNBOOK)
    run_id = start_runbook(settings, catalog, RUNBOOK, group=group, by_duration=f"PT{duration_s}S")
    view = wait_until(run_id, paused, timeout=120)
    plan = journal.last(view.entries, "plan").data
    rows = [dict(zip(plan["columns"], row)) for row in plan["rows"]]
    assert len(rows) == 8 and {r["topic"] for r in rows} == {topic}
    assert sum(int(r["replayed (+) / skipped (-)"]) for r in rows) == len(newer), rows
    assert consumer_progress(group) == before, "nothing changes before approval"

    runs.answer_gate(settings, catalog, run_id, True, "ivan", "the bad deploy is rolled back")
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    after = consumer_progress(group)
    assert sum(diff for _, _, diff in after.values()) == len(newer), after
    assert {key: consumer for key, (_, consumer, _) in after.items()} == \
        {(r["topic"], r["broker"], r["queue"]): r["target"] for r in rows}
    assert sorted(m.keys for m in consume(primary, group, topic, commit=False)) == sorted(newer), "exactly the newer"

    # RocketMQ's own tool, same time, on the twin group: it commits what the plan did.
    moment = parse_datetime(re.search(r"stored at or after ([^\s)]+)", journal.last(view.entries, "plan").summary)[1])
    mqadmin("resetOffsetByTime", "-g", twin, "-t", topic, "-s", str(moment))
    assert {key: consumer for key, (_, consumer, _) in consumer_progress(twin).items()} == \
        {key: consumer for key, (_, consumer, _) in after.items()}

    # The snapshot's printed restore puts the previous offsets back (a run of its own).
    snapshot = journal.last(view.entries, "snapshot").data
    command = shlex.split(snapshot["restore_command"])
    assert command[:3] == ["runbook", "run", RUNBOOK]
    restore_params = dict(arg.split("=", 1) for arg in command[3:] if arg != "-p")
    assert Path(restore_params["from_file"]).is_file()
    restore_id = start_runbook(settings, catalog, RUNBOOK, **{k: v for k, v in restore_params.items() if k != "cluster"})
    wait_until(restore_id, paused, timeout=120)
    runs.answer_gate(settings, catalog, restore_id, True, "judy", "undo")
    restored = wait_until(restore_id, finished, timeout=120)
    assert restored.succeeded, restored.message
    assert consumer_progress(group) == {k: (b, b, 0) for k, (b, _, _) in before.items()}
    order = kinds(view)
    assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")


def test_a_fault_part_way_restores_the_previous_offsets(primary, unique, runbook_env):
    topic, group = unique("orders"), unique("billing")
    make_topic(primary, topic, 4)
    make_group(primary, group)
    produce(primary, topic, [f"m-{i}" for i in range(20)])
    consume(primary, group, topic)
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="fail-during:update-offsets")
    run_id = start_runbook(settings, catalog, RUNBOOK, group=group, topic=[topic], to_earliest="true")
    wait_until(run_id, paused, timeout=120)
    runs.answer_gate(settings, catalog, run_id, True, "ivan", "go")
    view = wait_until(run_id, finished, timeout=120)
    assert not view.succeeded
    rollback = journal.last(view.entries, "rollback")
    assert rollback.data["restored"] is True and "restored 4 offset(s)" in rollback.summary
    with RocketMQAdmin.from_cluster(primary) as admin:
        assert all(p.diff == 0 for p in admin.progress(group, topic)), "every queue back at its previous offset"


def test_bad_input_exits_2_before_a_run_exists_and_online_consumers_are_named(primary, unique):
    topic, group = unique("orders"), unique("billing")
    make_topic(primary, topic, 2)
    make_group(primary, group)
    produce(primary, topic, ["a", "b"])
    consume(primary, group, topic)
    cases = {
        ("-p", f"group={unique('nobody')}", "-p", "to_latest=true"): "is not a consumer group",
        ("-p", f"group={group}", "-p", f"topic={unique('nothing')}", "-p", "to_latest=true"): "is not a topic",
        ("-p", f"group={group}", "-p", "to_datetime=2999-01-01T00:00:00.000"): "is in the future",
        ("-p", f"group={group}", "-p", "to_latest=true", "-p", "to_earliest=true"): "give exactly one of",
    }
    for args, message in cases.items():
        done = runbook("run", RUNBOOK, "-p", "cluster=primary", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stdout, done.stderr)
    unknown = runbook("plan", RUNBOOK, "-p", "cluster=elsewhere", "-p", f"group={group}", "-p", "to_latest=true")
    assert unknown.returncode == 2 and "no rocketmq cluster named 'elsewhere'" in unknown.stderr
    down = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_latest=true",
                   env={"STACK_ROCKETMQ_NAMESRV_PORT": "9"})
    assert down.returncode == 1 and down.stderr.strip().count("\n") == 0, down.stderr
    assert "does not answer" in down.stderr and "Traceback" not in down.stderr
