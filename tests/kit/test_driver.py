"""The driver's decisions, the same for every runbook, tested with a runbook that changes a JSON file
instead of a broker (tests/kit/catalog): real runs on the local Prefect server, started as `runbook run`
starts them, answered at the gate as the CLI answers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mq_runbooks.app import runs, starts
from mq_runbooks.base.errors import ParameterError
from mq_runbooks.kit import journal
from tests.flows.runbook_harness import finished, kinds, paused, team_catalog_env, wait_until  # noqa: F401

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


CATALOG = Path(__file__).resolve().parent / "catalog"


@pytest.fixture
def env(tmp_path, team_catalog_env):
    settings, catalog = team_catalog_env(CATALOG)
    target = tmp_path / "switch.json"
    target.write_text(json.dumps({"value": "blue"}))
    return settings, catalog, target


def start(settings, catalog, **raw):
    runbook = catalog.get("kit-file-switch")
    params = runbook.validate_parameters(raw)
    runbook.planner(params, None)  # the CLI's preflight (this runbook needs no clusters)
    return starts.start_run(settings, runbook, params, requested_by="bob")


def approved(settings, catalog, run_id):
    wait_until(run_id, paused)
    runs.answer_gate(settings, catalog, run_id, True, "alice", "")
    return wait_until(run_id, finished)


def state(target: Path) -> dict:
    return json.loads(target.read_text())


def outcome(view):
    return journal.last(view.entries, "outcome")


def test_a_plan_that_changes_nothing_never_reaches_the_gate(env):
    settings, catalog, target = env
    view = wait_until(start(settings, catalog, path=str(target), value="blue"), finished)
    assert view.succeeded and outcome(view).data["outcome"] == "unchanged"
    assert "approval_requested" not in kinds(view) and "action" not in kinds(view)
    assert state(target) == {"value": "blue"}


def test_a_missing_target_is_bad_input_before_a_run_exists(env, tmp_path):
    settings, catalog, _ = env
    runbook = catalog.get("kit-file-switch")
    params = runbook.validate_parameters({"path": str(tmp_path / "nope.json"), "value": "x"})
    with pytest.raises(ParameterError, match="nope.json does not exist"):
        runbook.planner(params, None)


def test_success_journals_each_typed_record_in_order(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green"))
    assert view.succeeded, view.message
    assert kinds(view) == ["parameters", "lock", "plan", "approval_requested", "approval", "snapshot", "action",
                           "verification", "outcome", "postmortem"]
    plan = journal.last(view.entries, "plan")
    assert plan.data["columns"] == ["file", "now", "after"] and plan.data["rows"] == [[str(target), "blue", "green"]]
    assert journal.last(view.entries, "action").data["step"] == "write"
    assert outcome(view).data == {"outcome": "succeeded", "changed": [f"{target} set to green"]}
    assert state(target) == {"value": "green", "writes": 1}


def test_a_step_is_applied_once_however_often_it_is_reached(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green", repeat="true"))
    assert view.succeeded, view.message
    assert state(target)["writes"] == 1
    assert [e.kind for e in view.entries].count("action") == 1
    assert any("was already applied in this run" in e.summary for e in view.entries if e.kind == "note")


def test_a_failure_before_any_change_says_so(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green", fail="before-change"))
    assert not view.succeeded
    assert outcome(view).summary.startswith("failed before changing anything")
    assert "rollback" not in kinds(view) and state(target) == {"value": "blue"}


def test_a_failure_after_a_change_restores_the_snapshot_and_says_what_changed(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green", fail="after-change"))
    assert not view.succeeded
    assert journal.last(view.entries, "rollback").data["restored"] is True
    text = outcome(view).summary
    assert text.startswith("failed and rolled back: injected: failed after the change")
    assert f"{target} back to blue" in text and f"it had changed: {target} set to green" in text
    assert state(target)["value"] == "blue"


def test_a_verify_that_fails_is_a_failure_and_restores(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green", fail="verify"))
    assert not view.succeeded and "VerificationFailed" in view.message
    assert [e.kind for e in view.entries].count("verification") == 1
    assert journal.last(view.entries, "verification").data["ok"] is False
    assert state(target)["value"] == "blue"


def test_a_failed_restore_gives_the_command_to_restore_by_hand(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green", fail="restore"))
    rollback = journal.last(view.entries, "rollback")
    assert rollback.data["restored"] is False
    command = f"runbook run kit-file-switch -p path={target} -p value=blue"
    assert rollback.data["restore_command"] == command and command in outcome(view).summary


def test_without_a_snapshot_the_outcome_names_what_changed_and_that_nothing_was_restored(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green", fail="after-change",
                                             snapshot="false"))
    text = outcome(view).summary
    assert text.startswith(f"failed after changing: {target} set to green. Nothing to restore automatically")
    assert state(target)["value"] == "green"


def test_a_step_that_fails_part_way_counts_as_a_change_and_is_restored(env):
    settings, catalog, target = env
    view = approved(settings, catalog, start(settings, catalog, path=str(target), value="green", fail="part-way"))
    assert not view.succeeded
    assert journal.last(view.entries, "rollback").data["restored"] is True
    assert "write failed part-way and may have applied part of its change" in outcome(view).summary
    assert state(target)["value"] == "blue"
