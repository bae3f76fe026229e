"""rocketmq-reset-offset end to end on the stack's real name server, broker and proxy: real runs
answered at the real gate, held against RocketMQ's own `mqadmin consumerProgress` and
`mqadmin resetOffsetByTime`, and read back by a consumer of the group."""
from __future__ import annotations

import json
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
from tests.flows.runbook_harness import (  # noqa: F401
    asked_again, at_second_gate, drift_after_one_approval, finished, kinds, paused, runbook_env, start_runbook, wait_until,
)
from tests.flows.steady_traffic import now_ms, rocketmq_writer
from tests.rocketmq_support import (
    consume, consumer_progress, make_group, make_topic, mqadmin, produce, rocketmq_primary, wait_for,
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


# -- traffic while the gate waits: by_duration is fixed at the first plan; the digest binds the intent --

WINDOW_S = 10  # by_duration=PT10S over messages arriving ~5 a second: the window's target moves every second


def offsets(cluster, queues, of) -> dict:
    """{(topic, broker, queue): of(admin, topic, broker, queue)} read now."""
    with RocketMQAdmin.from_cluster(cluster) as admin:
        return {key: of(admin, *key) for key in queues}


def plan_rows(view) -> list[dict]:
    plan = journal.last(view.entries, "plan").data
    return [dict(zip(plan["columns"], row)) for row in plan["rows"]]


def targets_of(rows) -> dict:
    return {(r["topic"], r["broker"], r["queue"]): r["target"] for r in rows}


def group_offsets(cluster, group, queues) -> dict:
    return offsets(cluster, queues, lambda admin, t, b, q: admin.consumer_offset(group, t, b, q))


@pytest.fixture
def live_topic(primary, unique):
    """A topic of 4 queues with messages arriving through the proxy (~5 a second) for the whole test,
    and a group that consumed what came in its first ~15 s and then stopped (no consumer online)."""
    topic, group = unique("orders"), unique("billing")
    make_topic(primary, topic, 4)
    make_group(primary, group)
    with rocketmq_writer(primary, topic, every_s=0.2, limit_s=600) as written:
        wait_for(lambda: written[0] >= 75, timeout=120, what="15 s of traffic")
        consume(primary, group, topic)
        yield topic, group, written


def waiting_window_run(runbook_env, group):
    """A run of by_duration=PT10S on `group` (its gate waits up to 10 minutes), once it waits: the
    settings, catalog, run id and view."""
    settings, catalog = runbook_env(RUNBOOK, timeout="600s")
    run_id = start_runbook(settings, catalog, RUNBOOK, group=group, by_duration=f"PT{WINDOW_S}S")
    return settings, catalog, run_id, wait_until(run_id, paused, timeout=120)


def test_by_duration_is_fixed_at_the_first_plan_so_one_approval_acts_while_messages_arrive(
        primary, live_topic, runbook_env):
    topic, group, written = live_topic
    settings, catalog, run_id, view = waiting_window_run(runbook_env, group)
    [pin] = [e for e in view.entries if e.kind == "note" and "relative_targets" in e.data]
    assert pin.summary.startswith(f"relative targets fixed at the first plan: by_duration=PT{WINDOW_S}S measured from ")
    first_plan_ms = parse_datetime(pin.data["planned_at"])
    rows = plan_rows(view)
    planned = targets_of(rows)
    queues = sorted(planned)
    assert len(queues) == 4 and {t for t, _, _ in queues} == {topic}
    assert planned == offsets(primary, queues, lambda a, t, b, q: a.offset_by_time(t, b, q, first_plan_ms - WINDOW_S * 1000))
    stored = {(r["topic"], r["broker"], r["queue"]): r["broker offset"] for r in rows}

    def window_moved():  # the window of the clock now starts past at least one more message on every queue
        later = offsets(primary, queues, lambda a, t, b, q: a.offset_by_time(t, b, q, now_ms() - WINDOW_S * 1000))
        return later if all(later[k] > planned[k] for k in queues) else None

    slid = wait_for(window_moved, timeout=120, what="the window to slide past new messages")
    wait_for(lambda: all(n > stored[k] for k, n in offsets(primary, queues, lambda a, t, b, q: a.max_offset(t, b, q)).items()),
             timeout=60, what="new messages on every queue")
    arrived = written[0]
    runs.answer_gate(settings, catalog, run_id, True, "ivan", "replay the last ten seconds")
    view = wait_until(run_id, finished, timeout=180)
    drift = drift_after_one_approval(view)
    assert kinds(view).count("plan") == 1 and "broker offset" in drift.summary
    assert written[0] > arrived, "messages kept arriving while the run acted"
    assert group_offsets(primary, group, queues) == planned, "acted once, with the pinned target"
    assert planned != slid, "not the target of the later clock"
    assert {line.split(" broker offset ")[0] for line in drift.data["drift"] if " broker offset " in line} == {
        f"{t}:{b}:{q}" for t, b, q in queues}, drift.data

    # `runbook status RUN --json`: the outcome's numbers are named fields, plan rows objects by column.
    document = json.loads(runbook("status", run_id, "--json").stdout)
    assert (document["outcome"]["outcome"], document["outcome"]["queues"], document["outcome"]["queues_checked"]) == (
        "succeeded", 4, 4), document["outcome"]
    [plan] = [e for e in document["journal"] if e["kind"] == "plan"]
    assert {(r["topic"], r["broker"], r["queue"]): r["target"] for r in plan["data"]["rows"]} == planned


def test_a_new_queue_while_the_gate_waits_is_asked_again_showing_it_and_one_answer_acts(
        primary, live_topic, runbook_env):
    topic, group, _ = live_topic
    settings, catalog, run_id, view = waiting_window_run(runbook_env, group)
    first = targets_of(plan_rows(view))
    assert len(first) == 4
    before = group_offsets(primary, group, sorted(first))
    make_topic(primary, topic, 6)  # someone grows the topic while the gate waits: two queues the plan did not name
    runs.answer_gate(settings, catalog, run_id, True, "ivan", "")
    view = wait_until(run_id, at_second_gate, timeout=180)
    note, asked = asked_again(view)
    assert note.data["changed"] == [f"{topic}:broker-a:4: new row", f"{topic}:broker-a:5: new row"], note.data
    assert not any(" target " in line for line in note.data["drift"]), "the pinned window kept the targets"
    assert f"- {topic}:broker-a:4: new row" in asked.data["markdown"]
    second = targets_of(plan_rows(view))
    assert {k: v for k, v in second.items() if k in first} == first, "the first four queues keep their targets"
    assert group_offsets(primary, group, sorted(first)) == before, "nothing applied before the new version is approved"

    runs.answer_gate(settings, catalog, run_id, True, "ivan", "the two new queues too")  # one answer
    view = wait_until(run_id, finished, timeout=180)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert "approval_refused" not in kinds(view)
    assert [e.data["gate"] for e in view.entries if e.kind == "approval_requested"] == [1, 2]
    assert group_offsets(primary, group, sorted(second)) == second, "all six queues as the second version planned"


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
