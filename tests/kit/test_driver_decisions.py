"""The driver's decisions (plan -> gate -> approve / reject / timeout -> snapshot -> act -> verify ->
restore on failure, faults injected at steps by key), driven in this process through the in-memory
port (tests/kit/memory_port.py) with the file runbook of tests/kit/catalog: no Prefect server, no
broker. The same runbook runs end to end on the real server in tests/kit/test_driver.py."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from prefect.exceptions import Pause

from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.kit import gateway, journal
from mq_runbooks.kit.driver import drive
from mq_runbooks.kit.runtime import RunContext
from tests.flows.runbook_harness import team_catalog_env  # noqa: F401
from tests.kit.memory_port import MemoryRunPort

CATALOG = Path(__file__).resolve().parent / "catalog"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def port(monkeypatch):
    """The in-memory port; and no Prefect connection at all (one would fail the test)."""
    def no_server(*_args, **_kwargs):
        raise AssertionError("the driver reached for the Prefect server through the gateway")

    monkeypatch.setattr(gateway.Session, "__init__", no_server)
    return MemoryRunPort()


@pytest.fixture
def world(tmp_path, monkeypatch, team_catalog_env, port):
    """(a function that drives a run once, the runbook's parameters model, the target file)."""
    monkeypatch.setenv("RUNBOOK_SIGNING_KEY", port.key.decode())
    monkeypatch.delenv("RUNBOOK_SLACK_BOT_TOKEN", raising=False)
    settings, catalog = team_catalog_env(CATALOG)
    runbook = catalog.get("kit-file-switch")
    steps = runbook.planner.__self__  # the runbook's STEPS (its planner is STEPS.dry_run)
    clusters = load_clusters(REPO / "clusters.yaml")
    target = tmp_path / "switch.json"
    target.write_text(json.dumps({"value": "blue"}))

    def run(run_id: str, fault: str | None = None, requested_by: str = "bob", **raw):
        context = RunContext(settings.model_copy(update={"inject_fault": fault}), clusters, catalog, {})
        params = runbook.validate_parameters({"path": str(target), **raw})
        port.current = run_id
        return drive(steps, params, requested_by, {}, port=port, run_id=run_id, context=context)

    return run, target


def new_run() -> str:
    return str(uuid.uuid4())


def value(target: Path) -> dict:
    return json.loads(target.read_text())


def outcome(port: MemoryRunPort, run_id: str) -> journal.Entry:
    return journal.last(port.read(run_id), "outcome")


def waits_then(port, run, run_id, decision="approve", by="alice", comment="", **raw):
    """Drive to the gate (the run suspends holding its lock), answer, drive again: the final state."""
    with pytest.raises(Pause):
        run(run_id, **raw)
    assert port.waiting[run_id] == "gate-1-1"
    assert port.locks, "a run waiting at its gate keeps its lock"
    assert any(tag.startswith("waits-for:1 of alice") for tag in port.tags[run_id])
    port.answer(run_id, decision=decision, by=by, comment=comment)
    return run(run_id, **{k: v for k, v in raw.items() if k != "fault"}, fault=raw.get("fault"))


def test_a_plan_that_changes_nothing_ends_unchanged_without_lock_gate_or_change(world, port):
    run, target = world
    run_id = new_run()
    state = run(run_id, value="blue")
    assert state.is_completed() and outcome(port, run_id).data["outcome"] == "unchanged"
    assert port.kinds(run_id) == ["parameters", "lock", "plan", "outcome"]
    assert not port.locks and port.postmortems == [run_id] and value(target) == {"value": "blue"}


def test_approved_plan_is_snapshotted_applied_verified_in_that_order(world, port):
    run, target = world
    run_id = new_run()
    state = waits_then(port, run, run_id, value="green")
    assert state.is_completed(), state.message
    assert port.kinds(run_id) == ["parameters", "lock", "plan", "approval_requested", "approval", "snapshot",
                                  "action", "verification", "outcome"]
    assert port.calls == ["observe-and-plan", "re-plan", "snapshot", "act", "write", "verify"]
    assert outcome(port, run_id).data == {"outcome": "succeeded", "changed": [f"{target} set to green"]}
    assert value(target) == {"value": "green", "writes": 1}
    assert not port.locks and not any(t.startswith("waits-for:") for t in port.tags[run_id])
    assert port.names[run_id] == f"kit-file-switch {target}"


def test_a_rejection_changes_nothing_and_ends_rejected(world, port):
    run, target = world
    run_id = new_run()
    state = waits_then(port, run, run_id, decision="reject", comment="not now", value="green")
    assert state.name == "Rejected" and state.type.value == "CANCELLED"
    assert outcome(port, run_id).data["outcome"] == "rejected"
    assert "snapshot" not in port.kinds(run_id) and value(target) == {"value": "blue"}
    assert not port.locks


def test_a_gate_nobody_answers_times_out_at_its_deadline(world, port):
    run, target = world
    run_id = new_run()
    with pytest.raises(Pause):
        run(run_id, value="green")
    port.waiting.pop(run_id)
    port.clock += __import__("datetime").timedelta(seconds=61)  # the policy's timeout is 60s
    state = run(run_id, value="green")
    assert state.name == "TimedOut" and state.type.value == "FAILED"
    assert journal.last(port.read(run_id), "rejection").data["by"] == "timeout"
    assert outcome(port, run_id).data["outcome"] == "rejected" and value(target) == {"value": "blue"}


def test_an_answer_the_policy_refuses_is_recorded_and_the_gate_waits_on(world, port):
    run, target = world
    run_id = new_run()
    with pytest.raises(Pause):
        run(run_id, value="green")
    port.answer(run_id, decision="approve", by="bob")  # the requester; the policy takes no self-approval
    with pytest.raises(Pause):
        run(run_id, value="green")
    refused = journal.last(port.read(run_id), "approval_refused")
    assert "bob is not an approver" in refused.summary and port.waiting[run_id] == "gate-1-2"
    assert value(target) == {"value": "blue"}


def test_an_unsigned_answer_is_refused(world, port):
    run, target = world
    run_id = new_run()
    with pytest.raises(Pause):
        run(run_id, value="green")
    key = port.waiting.pop(run_id)
    port.given[key] = {"decision": "approve", "by": "alice"}  # as a resume through Prefect's UI would send it
    with pytest.raises(Pause):
        run(run_id, value="green")
    assert "not signed" in journal.last(port.read(run_id), "approval_refused").summary


def test_another_run_holding_the_lock_stops_the_run_before_it_plans(world, port):
    run, target = world
    first, second = new_run(), new_run()
    with pytest.raises(Pause):
        run(first, value="green")
    state_error = None
    try:
        run(second, value="red")
    except Exception as exc:  # noqa: BLE001
        state_error = exc
    assert "another run holds the lock" in str(state_error)
    assert port.kinds(second) == ["parameters", "error", "outcome"]
    assert outcome(port, second).summary.startswith("failed before changing anything")


def test_fault_before_the_step_changes_nothing_and_restores_nothing(world, port):
    run, target = world
    run_id = new_run()
    with pytest.raises(Exception, match="injected fault"):
        waits_then(port, run, run_id, value="green", fault="fail-before:write")
    assert "action" not in port.kinds(run_id) and "rollback" not in port.kinds(run_id)
    assert outcome(port, run_id).summary.startswith("failed before changing anything")
    assert value(target) == {"value": "blue"} and not port.locks


def test_fault_after_the_step_restores_the_snapshot_and_says_what_changed(world, port):
    run, target = world
    run_id = new_run()
    with pytest.raises(Exception, match="injected fault"):
        waits_then(port, run, run_id, value="green", fault="fail-after:write")
    kinds = port.kinds(run_id)
    assert kinds[kinds.index("snapshot"):] == ["snapshot", "action", "error", "rollback", "outcome"]
    assert outcome(port, run_id).summary.startswith("failed and rolled back")
    assert outcome(port, run_id).data["changed"] == [f"{target} set to green"]
    assert value(target)["value"] == "blue" and port.calls[-1] == "restore-snapshot"


def test_a_verification_forced_to_fail_is_a_failure_and_restores(world, port):
    run, target = world
    run_id = new_run()
    with pytest.raises(Exception, match="verification failed"):
        waits_then(port, run, run_id, value="green", fault="verify")
    assert journal.last(port.read(run_id), "verification").data["ok"] is False
    assert "rollback" in port.kinds(run_id) and value(target)["value"] == "blue"


def test_a_restore_that_fails_gives_the_command_to_restore_by_hand(world, port):
    run, target = world
    run_id = new_run()
    with pytest.raises(Exception, match="failed after the change"):
        waits_then(port, run, run_id, value="green", fail="restore")
    restore = journal.last(port.read(run_id), "rollback")
    assert restore.summary.startswith("RESTORE FAILED") and "runbook run kit-file-switch" in restore.summary
    assert "restore by hand with" in outcome(port, run_id).summary and value(target)["value"] == "green"


def test_a_step_is_applied_once_however_often_it_is_reached(world, port):
    run, target = world
    run_id = new_run()
    state = waits_then(port, run, run_id, value="green", repeat=True)
    assert state.is_completed() and value(target) == {"value": "green", "writes": 1}
    assert [e.kind for e in port.read(run_id)].count("action") == 1
    assert any("already applied" in e.summary for e in port.read(run_id) if e.kind == "note")


def test_a_run_executed_again_after_its_end_does_nothing_and_keeps_its_state(world, port):
    run, target = world
    run_id = new_run()
    waits_then(port, run, run_id, value="green")
    entries = len(port.read(run_id))
    again = run(run_id, value="green")
    assert again.is_completed() and len(port.read(run_id)) == entries
    assert value(target) == {"value": "green", "writes": 1}
