"""redis-streams-drain-stuck end to end on the stack's real Redis primary (and its replica, which the
dead-letter copies wait for): real runs through the engine's executor, answered at the real gate."""
from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from mq_runbooks.app import runs
from mq_runbooks.flows.redis_streams_drain_stuck import DrainStuckParameters, dry_run
from mq_runbooks.kit import journal
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import (  # noqa: F401 (runbook_env is a fixture)
    finished, kinds, paused, runbook_env, start_runbook, wait_until,
)
from tests.integrations.test_rabbitmq import eventually
from tests.integrations.test_redis_streams import raw, stream  # noqa: F401 (fixtures: a client, a cleaned-up name)

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = "redis-streams-drain-stuck"
GROUP = "billing"


def add(raw, stream: str, count: int) -> list[str]:
    pipe = raw.pipeline(transaction=False)
    for i in range(count):
        pipe.xadd(stream, {"n": str(i), "card": f"4111-{i:04d}"})
    return [entry_id.decode() for entry_id in pipe.execute()]


def read_new(raw, stream: str, consumer: str, count: int) -> list[str]:
    reply = raw.xreadgroup(GROUP, consumer, {stream: ">"}, count=count)
    return [entry_id.decode() for _, entries in reply for entry_id, _ in entries]


def make_poison(raw, stream: str, consumer: str, entry_id: str, deliveries: int) -> None:
    """As if `consumer` had been handed the entry `deliveries` times (and crashed on it each time)."""
    raw.xclaim(stream, GROUP, consumer, 0, [entry_id], retrycount=deliveries, justid=True)


def pending_of(raw, stream: str) -> dict[str, str]:
    reply = raw.xpending_range(stream, GROUP, "-", "+", 100_000)
    return {p["message_id"].decode(): p["consumer"].decode() for p in reply}


def consumers(raw, stream: str) -> dict[str, dict]:
    return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"]: c
            for c in raw.xinfo_consumers(stream, GROUP)}


def dead_letter_copies(raw, stream: str, entry_id: str) -> list[str]:
    found = []
    for copy_id, fields in raw.xrange(f"{stream}:dlq"):
        if fields.get(b"dlq.original.id") == entry_id.encode() and fields.get(b"dlq.original.stream") == stream.encode():
            found.append(copy_id.decode())
    return found


class HealthyConsumer(threading.Thread):
    """A well-behaved consumer: its own pending list first (`0`: entries claimed to it), then new
    entries (`>`), each processed (recorded) and acknowledged."""

    def __init__(self, client_factory, stream: str, name: str):
        super().__init__(daemon=True)
        self.client = client_factory()
        self.stream, self.name = stream, name
        self.processed: list[str] = []
        self.stopping = threading.Event()
        self.error: Exception | None = None

    def run(self):
        try:
            while not self.stopping.is_set():
                for start, block in (("0", None), (">", 100)):
                    reply = self.client.xreadgroup(GROUP, self.name, {self.stream: start}, count=100, block=block)
                    ids = [entry_id for _, entries in reply for entry_id, _ in entries]
                    if ids:
                        self.processed.extend(i.decode() for i in ids)
                        self.client.xack(self.stream, GROUP, *ids)
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            self.error = exc

    def stop(self):
        self.stopping.set()
        self.join(timeout=10)
        self.client.close()
        assert self.error is None, self.error


def test_a_killed_consumer_is_drained_to_the_healthy_one_and_the_poison_entry_to_the_dead_letter_stream(
        clusters, raw, stream, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    ids = add(raw, stream, 200)
    raw.xgroup_create(stream, GROUP, id="0")
    assert read_new(raw, stream, "billing-dead", 200) == ids  # then it is killed: 200 pending, never acked
    poison = ids[7]
    make_poison(raw, stream, "billing-dead", poison, 9)
    healthy = HealthyConsumer(clusters.redis_cluster("primary").client, stream, "billing-healthy")
    healthy.start()
    try:
        later = add(raw, stream, 50)  # the healthy consumer keeps up with new entries meanwhile
        eventually(lambda: set(later) <= set(healthy.processed) or None, "the healthy consumer to read the new entries")
        eventually(lambda: len(raw.xpending_range(stream, GROUP, "-", "+", 1000, idle=2000)) == 200
                   and consumers(raw, stream)["billing-dead"]["idle"] >= 2000 or None, "200 entries idle 2 s")

        run_id = start_runbook(settings, catalog, RUNBOOK, stream=stream, group=GROUP, idle_ms="2000",
                               poison_after="3", claim_to="billing-healthy")
        view = wait_until(run_id, paused, timeout=90)
        plan = journal.last(view.entries, "plan").data
        assert (plan["to_claim"], plan["to_dead_letter"], plan["deletions"]) == (199, 1, ["billing-dead"])
        [poison_row] = [row for row in plan["rows"] if row[1] == poison]
        assert poison_row[3] == 9 and poison_row[4].startswith(f"dead-letter to {stream}:dlq")
        assert poison_row[5] == "n=<1 bytes>, card=<9 bytes>", "values are redacted unless show_values=true"
        assert "4111-0007" not in json.dumps(view.entries[-1].data) + json.dumps(plan)
        assert pending_of(raw, stream)[poison] == "billing-dead" and healthy.processed.count(poison) == 0, \
            "nothing changes before approval"

        runs.answer_gate(settings, catalog, run_id, True, "bob", "billing-dead's pod is gone")
        view = wait_until(run_id, finished, timeout=120)
        assert view.succeeded, (view.message, view.entries[-4:])

        expected = [i for i in ids if i != poison] + later
        eventually(lambda: len(healthy.processed) >= len(expected) or None,
                   "the healthy consumer to process the claimed entries", timeout_s=30)
    finally:
        healthy.stop()
    counts = Counter(healthy.processed)
    assert set(counts) == set(expected) and set(counts.values()) == {1}, "every entry processed once"
    assert poison not in counts
    assert len(dead_letter_copies(raw, stream, poison)) == 1 and raw.xlen(f"{stream}:dlq") == 1
    [(_, fields)] = raw.xrange(f"{stream}:dlq")
    assert fields[b"card"] == b"4111-0007" and fields[b"dlq.original.group"] == GROUP.encode()
    assert fields[b"dlq.original.consumer"] == b"billing-dead" and fields[b"dlq.delivery.count"] == b"9"
    assert pending_of(raw, stream) == {}, "nothing is pending any more"
    assert set(consumers(raw, stream)) == {"billing-healthy"}, "the dead consumer is deleted"

    steps = [e.data["step"] for e in view.entries if e.kind == "action"]
    assert steps == [f"dead-letter:{poison}", "ack-dead-lettered", "claim", "delete-consumers"]
    order = kinds(view)
    assert order.index("approval") < order.index("snapshot") < order.index("action") < order.index("verification")
    snapshot = journal.last(view.entries, "snapshot")
    saved = json.loads(Path(snapshot.data["path"]).read_text())
    assert {p["id"] for p in saved["pending"]} == set(ids) and saved["pending"][0]["consumer"] == "billing-dead"
    assert "acknowledged entries stay acknowledged and dead-letter copies are never deleted" in snapshot.summary
    assert snapshot.data["restore_command"].startswith("redis-cli -u redis://127.0.0.1:")
    assert journal.last(view.entries, "verification").data["copies_checked"] == 1


def test_a_failure_before_the_ack_restores_ownership_and_a_rerun_never_copies_twice(
        raw, stream, runbook_env, monkeypatch):
    ids = add(raw, stream, 10)
    raw.xgroup_create(stream, GROUP, id="0")
    read_new(raw, stream, "billing-dead", 10)
    make_poison(raw, stream, "billing-dead", ids[3], 6)
    raw.xgroup_createconsumer(stream, GROUP, "billing-healthy")
    eventually(lambda: len(raw.xpending_range(stream, GROUP, "-", "+", 100, idle=1000)) == 10 or None,
               "entries idle 1 s")
    parameters = dict(stream=stream, group=GROUP, idle_ms="1000", poison_after="3", claim_to="billing-healthy")

    settings, catalog = runbook_env(RUNBOOK, RUNBOOK_INJECT_FAULT="fail-before:ack-dead-lettered")
    run_id = start_runbook(settings, catalog, RUNBOOK, **parameters)
    wait_until(run_id, paused, timeout=90)
    runs.answer_gate(settings, catalog, run_id, True, "bob", "")
    view = wait_until(run_id, finished, timeout=120)
    assert not view.succeeded
    assert "injected fault: step ack-dead-lettered failed before its change" in journal.last(view.entries, "error").summary
    rollback = journal.last(view.entries, "rollback")
    assert rollback.data["restored"] is True and "dead-letter copies are kept" in rollback.summary
    assert len(dead_letter_copies(raw, stream, ids[3])) == 1
    assert set(pending_of(raw, stream).values()) == {"billing-dead"} and len(pending_of(raw, stream)) == 10
    outcome = journal.last(view.entries, "outcome").summary
    assert "dead-letter copies are kept" in outcome
    assert f"it had changed: copied poison entry {ids[3]} to {stream}:dlq as" in outcome

    monkeypatch.delenv("RUNBOOK_INJECT_FAULT")
    settings, catalog = runbook_env(RUNBOOK)
    rerun = start_runbook(settings, catalog, RUNBOOK, **parameters)
    wait_until(rerun, paused, timeout=90)
    runs.answer_gate(settings, catalog, rerun, True, "bob", "")
    view = wait_until(rerun, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert any(e.summary.startswith(f"poison entry {ids[3]} was copied to {stream}:dlq before (as ")
               and "not copied again" in e.summary for e in view.entries if e.kind == "action")
    assert len(dead_letter_copies(raw, stream, ids[3])) == 1 and raw.xlen(f"{stream}:dlq") == 1, "never copied twice"
    assert pending_of(raw, stream) == {i: "billing-healthy" for i in ids if i != ids[3]}
    assert "billing-dead" not in consumers(raw, stream)

    # The snapshot's restore command, run by hand, gives the entries back to the consumer that held them.
    command = journal.last(view.entries, "snapshot").data["restore_command"]
    restored = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert restored.returncode == 0, restored.stderr
    assert pending_of(raw, stream) == {i: "billing-dead" for i in ids if i != ids[3]}


@pytest.mark.parametrize("change, expected", [
    ({"stream": "no-such-stream-xyz"}, "has no stream 'no-such-stream-xyz'"),
    ({"group": "no-such-group"}, "has no consumer group 'no-such-group'"),
    ({"idle_ms": "-1"}, "idle_ms: Input should be greater than or equal to 0"),
    ({"claim_to": "nobody"}, "claim_to: 'nobody' is no consumer of group 'billing'"),
])
def test_bad_input_exits_2_before_a_run_exists(raw, stream, change, expected):
    ids = add(raw, stream, 3)
    raw.xgroup_create(stream, GROUP, id="0")
    read_new(raw, stream, "billing-1", 3)
    parameters = {"cluster": "primary", "stream": stream, "group": GROUP, **change}
    result = runbook("run", RUNBOOK, *[arg for key, value in parameters.items() for arg in ("-p", f"{key}={value}")])
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert "started run" not in result.stdout
    assert pending_of(raw, stream) == {i: "billing-1" for i in ids}


def test_stuck_entries_without_claim_to_are_refused_naming_the_healthy_consumers(raw, stream):
    ids = add(raw, stream, 3)
    raw.xgroup_create(stream, GROUP, id="0")
    read_new(raw, stream, "billing-1", 3)
    raw.xclaim(stream, GROUP, "billing-1", 0, ids, idle=600_000, justid=True)  # as if untouched for 10 minutes
    raw.xgroup_createconsumer(stream, GROUP, "billing-2")
    result = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", f"stream={stream}", "-p", f"group={GROUP}")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "claim_to: required: 3 stuck entr(ies)" in result.stderr and "billing-2 (idle" in result.stderr


def test_redis_down_is_said_in_one_line(tmp_path):
    config = tmp_path / "clusters.yaml"
    config.write_text('redis:\n  primary: {url: "redis://127.0.0.1:1/0", socket_timeout_s: 2}\n')
    result = runbook("plan", RUNBOOK, "-p", "cluster=primary", "-p", "stream=orders", "-p", "group=billing",
                     env={"RUNBOOK_CLUSTERS": str(config)})
    assert result.returncode == 1, result.stdout + result.stderr  # unreachable is no bad input: the CLI exits 1
    assert result.stderr.strip().count("\n") == 0
    assert "redis 'primary' (redis://127.0.0.1:1/0) is unreachable" in result.stderr


def test_poison_values_are_shown_only_when_asked(clusters, raw, stream):
    ids = add(raw, stream, 2)
    raw.xgroup_create(stream, GROUP, id="0")
    read_new(raw, stream, "billing-1", 2)
    raw.xclaim(stream, GROUP, "billing-1", 0, ids[:1], idle=600_000, retrycount=8, justid=True)

    def plan(**extra):
        params = DrainStuckParameters(cluster="primary", stream=stream, group=GROUP, **extra)
        return dry_run(params, clusters)

    redacted, shown = plan(), plan(show_values=True)
    assert redacted.rows() == [("billing-1", ids[0], redacted.moves[0].idle_ms, 8,
                                f"dead-letter to {stream}:dlq, then ack", "n=<1 bytes>, card=<9 bytes>")]
    assert shown.rows()[0][5] == "n=0, card=4111-0000" and "4111-0000" not in redacted.markdown()
    assert redacted.claim_to is None and not redacted.deletions, "nothing to claim: claim_to is not needed"


def test_idle_ms_is_measured_at_the_first_plan_so_entries_stuck_later_are_left_for_another_run(
        raw, stream, runbook_env):
    settings, catalog = runbook_env(RUNBOOK)
    ids = add(raw, stream, 20)
    raw.xgroup_create(stream, GROUP, id="0")
    raw.xgroup_createconsumer(stream, GROUP, "billing-healthy")
    assert read_new(raw, stream, "billing-dead", 20) == ids  # then it is killed: 20 pending, never acked
    eventually(lambda: len(raw.xpending_range(stream, GROUP, "-", "+", 100, idle=1500)) == 20 or None,
               "20 entries idle 1.5 s")
    run_id = start_runbook(settings, catalog, RUNBOOK, stream=stream, group=GROUP, idle_ms="1000",
                           claim_to="billing-healthy")
    view = wait_until(run_id, paused, timeout=90)
    [pin] = [e for e in view.entries if e.kind == "note" and "relative_targets" in e.data]
    assert pin.data["relative_targets"].startswith("idle_ms=1000") and pin.data["planned_at"]
    plan = journal.last(view.entries, "plan").data
    assert (plan["to_claim"], plan["deletions"]) == (20, ["billing-dead"])

    # While the gate waits, another consumer dies holding new entries, and they become idle 1 s too.
    later = add(raw, stream, 5)
    assert read_new(raw, stream, "billing-dead-2", 5) == later
    eventually(lambda: len(raw.xpending_range(stream, GROUP, "-", "+", 100, idle=1000, consumername="billing-dead-2"))
               == 5 or None, "the later entries to be idle 1 s")
    runs.answer_gate(settings, catalog, run_id, True, "bob", "billing-dead's pod is gone")
    view = wait_until(run_id, finished, timeout=120)
    assert view.succeeded, (view.message, view.entries[-4:])
    assert [e.data["gate"] for e in view.entries if e.kind == "approval_requested"] == [1], "asked once"
    assert "approval_refused" not in kinds(view)
    owners = pending_of(raw, stream)
    assert {i: owners[i] for i in ids} == {i: "billing-healthy" for i in ids}, "the planned entries were claimed"
    assert {i: owners[i] for i in later} == {i: "billing-dead-2" for i in later}, "the later ones were left"
    assert "billing-dead" not in consumers(raw, stream)


def test_a_rerun_says_the_idle_entries_on_claim_to_are_left_alone(clusters, raw, stream):
    """Issue 27 (frictions): after a drain, the claimed entries sit idle on claim_to until it reads
    them; a rerun must say so, not that no entry is idle."""
    ids = add(raw, stream, 3)
    raw.xgroup_create(stream, GROUP, id="0")
    raw.xgroup_createconsumer(stream, GROUP, "billing-healthy")
    read_new(raw, stream, "billing-dead", 3)
    raw.xclaim(stream, GROUP, "billing-healthy", 0, ids, idle=600_000, justid=True)  # as a drain leaves them

    plan = dry_run(DrainStuckParameters(cluster="primary", stream=stream, group=GROUP, idle_ms=1500,
                                        claim_to="billing-healthy"), clusters)

    assert not plan.changes_anything()
    assert plan.summary() == (f"nothing to move in group {GROUP} of {stream}: the 3 pending entr(ies) idle 1500 ms "
                              "or more are on the healthy consumer billing-healthy (claim_to) and left alone")
    assert "no pending entry idle" not in plan.markdown()
