"""redis-streams-replay end to end on the stack's real Redis primary: real runs through the engine's
executor, answered at the real gate, read back by a consumer of the group."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pytest

from mq_runbooks.app import runs
from mq_runbooks.app.alert_routing import MissingField, matching_triggers, render_parameters
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.flows.redis_streams_replay import StreamReplayParameters, plan_replay
from mq_runbooks.flows.replay_spec import parse_datetime
from mq_runbooks.integrations.alerts import Alert
from mq_runbooks.integrations.redis_streams import RedisStreams
from mq_runbooks.integrations.redis_streams_records import parse_entry_id
from mq_runbooks.kit import journal
from tests.app.test_cli import REPO, runbook
from tests.flows.runbook_harness import (  # noqa: F401 (runbook_env is a fixture)
    finished, kinds, paused, runbook_env, start_runbook, wait_until,
)
from tests.flows.steady_traffic import WINDOW_MS, history_stamps, now_ms, redis_writer
from tests.integrations.test_rabbitmq import eventually
from tests.integrations.test_redis_streams import raw, stream  # noqa: F401 (fixtures: a client, a cleaned-up name)

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "redis-streams-replay"
GROUP = "billing"
HOUR_MS = 3_600_000


def add_at(raw, stream: str, at_ms: int, count: int) -> list[str]:
    """`count` entries with ids of the time `at_ms` (what XADD * would have given them then)."""
    pipe = raw.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {"n": str(i)}, id=f"{at_ms}-{i}")
    return [entry_id.decode() for entry_id in pipe.execute()]


def consume_all(raw, stream: str, consumer: str) -> list[str]:
    """Read everything new for the group and acknowledge it, as a consumer does."""
    read = []
    while True:
        reply = raw.xreadgroup(GROUP, consumer, {stream: ">"}, count=1000)
        ids = [entry_id for _, entries in reply for entry_id, _ in entries]
        if not ids:
            return read
        raw.xack(stream, GROUP, *ids)
        read += [i.decode() for i in ids]


def group_info(raw, stream: str) -> dict:
    [info] = raw.xinfo_groups(stream)
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in info.items()}


def idle_consumers(raw, stream: str, at_least_ms: int):
    return all(c["idle"] >= at_least_ms for c in raw.xinfo_consumers(stream, GROUP)) or None


def test_a_replay_by_duration_redelivers_exactly_the_entries_newer_than_the_target(raw, stream, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    now = int(time.time() * 1000)
    older = add_at(raw, stream, now - 2 * HOUR_MS, 10)
    newer = add_at(raw, stream, now - HOUR_MS // 2, 5)
    raw.xgroup_create(stream, GROUP, id="0")
    assert consume_all(raw, stream, "billing-1") == older + newer
    eventually(lambda: idle_consumers(raw, stream, 1000), "billing-1 to be idle 1 s (stopped)")

    run_id = start_runbook(settings, catalog, RUNBOOK, stream=stream, group=GROUP, by_duration="PT1H",
                           active_within_ms="1000")
    view = wait_until(run_id, paused, timeout=90)
    plan = journal.last(view.entries, "plan").data
    assert (plan["current_id"], plan["target_id"], plan["replayed"], plan["skipped"]) == (newer[-1], older[-1], 5, 0)
    assert plan["spec"].startswith("by_duration=PT1H (entries since ") and not plan["before_first"]
    assert group_info(raw, stream)["last-delivered-id"].decode() == newer[-1], "nothing changes before approval"

    runs.answer_gate(settings, catalog, run_id, True, "bob", "the deploy is rolled back")
    view = wait_until(run_id, finished, timeout=90)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert consume_all(raw, stream, "billing-1") == newer, "exactly the entries of the last hour, once"
    assert consume_all(raw, stream, "billing-1") == []

    snapshot = journal.last(view.entries, "snapshot")
    saved = json.loads(Path(snapshot.data["path"]).read_text())
    assert (saved["last_delivered_id"], saved["entries_read"]) == (newer[-1], 15)
    assert snapshot.data["restore_command"].endswith(f"-p to_id={newer[-1]}")
    assert "XINFO GROUPS" in journal.last(view.entries, "verification").summary
    order = kinds(view)
    assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")


def test_active_consumers_are_refused_before_the_gate(raw, stream, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    add_at(raw, stream, int(time.time() * 1000) - 1000, 3)
    raw.xgroup_create(stream, GROUP, id="0")
    consume_all(raw, stream, "billing-7")  # it just read: active (read within the last 10 minutes)
    # The plan tells the truth first: the refusal a run would end with.
    args = ["plan", RUNBOOK, "-p", "cluster=primary", "-p", f"stream={stream}", "-p", f"group={GROUP}",
            "-p", "to_earliest=true", "-p", "active_within_ms=600000"]
    planned = runbook(*args, "--json")
    assert planned.returncode == 0, planned.stderr
    assert "billing-7 (idle" in json.loads(planned.stdout)["refusal"]
    shown = runbook(*args)
    assert "would be refused: " in shown.stdout and "Run it with" not in shown.stdout, shown.stdout
    run_id = start_runbook(settings, catalog, RUNBOOK, stream=stream, group=GROUP, to_earliest="true",
                           active_within_ms="600000")
    view = wait_until(run_id, finished, timeout=90)
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "refused", outcome.summary
    assert "billing-7 (idle" in outcome.summary and "wait_for_inactive" in outcome.summary
    assert "approval_requested" not in kinds(view)
    assert group_info(raw, stream)["entries-read"] == 3


def test_a_failed_verification_sets_the_group_back(raw, stream, runbook_env):
    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="verify")
    ids = add_at(raw, stream, int(time.time() * 1000) - 1000, 6)
    raw.xgroup_create(stream, GROUP, id="0")
    consume_all(raw, stream, "billing-1")
    eventually(lambda: idle_consumers(raw, stream, 1000), "billing-1 to be idle 1 s")
    run_id = start_runbook(settings, catalog, RUNBOOK, stream=stream, group=GROUP, to_id=ids[1],
                           active_within_ms="1000")
    wait_until(run_id, paused, timeout=90)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, finished, timeout=90)
    assert not view.succeeded
    rollback = journal.last(view.entries, "rollback")
    assert rollback.data["restored"] is True and f"set back to last-delivered id {ids[-1]}" in rollback.summary
    info = group_info(raw, stream)
    assert (info["last-delivered-id"].decode(), info["entries-read"], info["lag"]) == (ids[-1], 6, 0)


def test_the_plan_says_when_the_target_is_before_the_trimmed_start(clusters, raw, stream):
    ids = add_at(raw, stream, int(time.time() * 1000) - HOUR_MS, 10)
    raw.xgroup_create(stream, GROUP, id="$")
    raw.xtrim(stream, maxlen=4, approximate=False)
    with RedisStreams.from_cluster(clusters.redis_cluster("primary")) as streams:
        plan = plan_replay(streams, StreamReplayParameters(cluster="primary", stream=stream, group=GROUP,
                                                           to_earliest=True))
    assert (plan.target_id, plan.replayed, plan.trimmed, plan.before_first) == ("0-0", 4, 6, True)
    assert plan.first_entry_id == ids[6]
    assert any("6 entr(ies) were trimmed or deleted" in warning for warning in plan.warnings())


def test_unknown_group_is_bad_input_and_redis_down_is_one_line(raw, stream, tmp_path):
    add_at(raw, stream, int(time.time() * 1000) - 1000, 2)
    raw.xgroup_create(stream, GROUP, id="0")
    unknown = runbook("run", RUNBOOK, "-p", "cluster=primary", "-p", f"stream={stream}", "-p", "group=biling",
                      "-p", "to_latest=true")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "has no consumer group 'biling'; did you mean 'billing'?" in unknown.stderr
    assert "started run" not in unknown.stdout and "Traceback" not in unknown.stderr

    config = tmp_path / "clusters.yaml"
    config.write_text('redis:\n  primary: {url: "redis://127.0.0.1:1/0", socket_timeout_s: 2}\n')
    down = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", "stream=orders", "-p", "group=billing",
                   "-p", "by_duration=PT1H", env={"RUNBOOK_CLUSTERS": str(config)})
    assert down.returncode == 1, down.stdout + down.stderr
    assert down.stderr.strip().count("\n") == 0 and "is unreachable" in down.stderr


def test_redis_exporter_alerts_start_the_runbooks_with_their_labels():
    catalog = load_catalog(REPO / "mq_runbooks" / "runbooks")
    labels = {"cluster": "primary", "stream": "orders", "group": "billing", "severity": "page"}

    def alert(name: str, **annotations: str) -> Alert:
        return Alert("alertmanager", "firing", {"alertname": name, **labels}, annotations,
                     dt.datetime.now(dt.timezone.utc), None, "f1")

    stuck = alert("RedisStreamGroupStuck", claim_to="billing-2")
    [(drain, trigger)] = matching_triggers(catalog, stuck)
    params = drain.validate_parameters(render_parameters(trigger, stuck))
    assert drain.id == "redis-streams-drain-stuck" and (params.stream, params.group, params.claim_to) == (
        "orders", "billing", "billing-2")
    assert drain.lock_key(params) == "redis:primary:orders:group:billing"
    with pytest.raises(MissingField, match="annotation 'claim_to' is missing"):
        render_parameters(trigger, alert("RedisStreamGroupStuck"))

    lag = alert("RedisStreamConsumerLag")
    [(replay, trigger)] = matching_triggers(catalog, lag)
    params = replay.validate_parameters(render_parameters(trigger, lag))
    assert replay.id == RUNBOOK and params.to_latest and params.wait_for_inactive == 300
    assert replay.lock_key(params) == drain.lock_key(params), "a drain and a replay of one group never overlap"


def test_after_approval_the_run_waits_for_the_consumers_to_stop(clusters, raw, stream, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    ids = add_at(raw, stream, int(time.time() * 1000) - 1000, 4)
    raw.xgroup_create(stream, GROUP, id="0")
    raw.xreadgroup(GROUP, "billing-1", {stream: ">"}, count=10)  # delivered, not acknowledged yet
    reader = clusters.redis_cluster("primary").client()
    stop = threading.Event()

    def keep_reading():  # a running consumer, retrying its pending entries every 100 ms (on Redis 7.0 an
        while not stop.is_set():  # empty read does not count as activity: see the runbook's docstring)
            reader.xreadgroup(GROUP, "billing-1", {stream: "0"}, count=10)
            stop.wait(0.1)

    thread = threading.Thread(target=keep_reading, daemon=True)
    thread.start()
    try:
        run_id = start_runbook(settings, catalog, RUNBOOK, stream=stream, group=GROUP, to_earliest="true",
                               active_within_ms="1500", wait_for_inactive="60")
        view = wait_until(run_id, paused, timeout=90)
        assert journal.last(view.entries, "plan").data["active_consumers"] == ["billing-1"]
        runs.answer_gate(settings, catalog, run_id, True, "bob", "stopping billing-1 now")
    finally:
        stop.set()
        thread.join(timeout=10)
        reader.close()
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert consume_all(raw, stream, "billing-1") == ids


def test_by_duration_is_fixed_at_the_first_plan_so_one_approval_acts_while_entries_arrive(raw, stream, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    stamps = history_stamps(now_ms())
    pipe = raw.pipeline(transaction=False)
    for stamp in stamps:  # the last hour, one entry every 6 s
        pipe.xadd(stream, {"n": str(stamp)}, id=f"{stamp}-0")
    pipe.execute()
    raw.xgroup_create(stream, GROUP, id="$")  # the group has read everything so far

    def target_for(moment_ms: int) -> str:
        return f"{max(s for s in stamps if s < moment_ms - WINDOW_MS)}-0"

    with redis_writer(raw, stream):
        run_id = start_runbook(settings, catalog, RUNBOOK, stream=stream, group=GROUP, by_duration="PT15M")
        view = wait_until(run_id, paused, timeout=90)
        [pin] = [e for e in view.entries if e.kind == "note" and "relative_targets" in e.data]
        assert pin.data["relative_targets"] == "by_duration=PT15M"
        first_plan_ms = parse_datetime(pin.data["planned_at"])
        plan = journal.last(view.entries, "plan").data
        assert plan["target_id"] == target_for(first_plan_ms), "planned from the pinned moment"
        assert plan["spec"].startswith("by_duration=PT15M (entries since ")
        slid = eventually(lambda: target_for(now_ms()) if target_for(now_ms()) != plan["target_id"] else None,
                          "the 15-minute window to move", 60)
        last_planned = parse_entry_id(plan["rows"][0][7])
        eventually(lambda: parse_entry_id(raw.xinfo_stream(stream)["last-generated-id"].decode()) > last_planned
                   or None, "new entries", 30)
        runs.answer_gate(settings, catalog, run_id, True, "bob", "replay the last 15 minutes")
        view = wait_until(run_id, finished, timeout=90)
    assert view.succeeded, (view.message, view.entries[-4:])
    moved_to = group_info(raw, stream)["last-delivered-id"].decode()
    assert moved_to == plan["target_id"] and moved_to != slid, "acted once, with the pinned target"
    assert [e.data["gate"] for e in view.entries if e.kind == "approval_requested"] == [1], "asked once"
    assert "approval_refused" not in kinds(view)
    [drift] = [e for e in view.entries if e.kind == "note" and "drift" in e.data]
    assert any(line.startswith(f"{stream}:{GROUP} last entry ") for line in drift.data["drift"]), drift.data
