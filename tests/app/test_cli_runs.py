"""Runs as operators name and list them from the command line: the full id, a unique prefix of 6+
characters or the Prefect name; `runbook runs` filters, columns and pipe-friendly output."""
from __future__ import annotations

import json
import uuid

import pytest
from prefect.client.orchestration import get_client

from mq_runbooks.app import runs
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.settings import Settings
from tests.app.test_cli import runbook
from tests.app.test_serve_alerts import group  # noqa: F401  (the fixture: a group with committed offsets)
from tests.flows.runbook_harness import finished, paused, wait_until


@pytest.fixture(scope="module")
def paused_run(group):
    """A real kafka-replay run requested by alice, waiting at its gate; rejected at the end if it still waits."""
    started = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true",
                      "--as", "alice", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    view = wait_until(run_id, paused, timeout=90)
    yield view, group
    if runs.read_run(run_id).state_type == "PAUSED":
        runs.answer_gate(Settings.from_environ(), load_catalog(Settings.from_environ().catalog), run_id, False,
                         "alice", "test over")


def test_status_takes_a_prefix_or_the_name_and_refuses_short_or_unknown_ones(paused_run):
    view, _ = paused_run
    for reference in (view.id, view.id[:8], view.id[:6].upper(), view.name):
        result = runbook("status", reference)
        assert result.returncode == 0, (reference, result.stderr)
        assert f"run {view.id} (kafka-replay): Suspended" in result.stdout, reference
    short = runbook("status", view.id[:5])
    assert short.returncode == 2
    assert "at least 6 characters" in short.stderr and "Traceback" not in short.stderr
    unknown = runbook("status", "no-such-run-name")
    assert unknown.returncode == 2 and "no run 'no-such-run-name'" in unknown.stderr


def test_an_ambiguous_name_is_bad_input_listing_every_match():
    settings = Settings.from_environ()
    flow = load_catalog(settings.catalog).get("kafka-replay").flow_function
    name = f"twin-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        twins = [client.create_flow_run(flow, name=name, parameters={}, tags=[runs.RUNBOOK_TAG, "runbook:kafka-replay"],
                                        state=None) for _ in range(2)]
    try:
        result = runbook("status", name)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"'{name}' names 2 runs" in result.stderr
        assert all(str(twin.id) in result.stderr for twin in twins)
    finally:
        with get_client(sync_client=True) as client:
            for twin in twins:
                client.delete_flow_run(twin.id)


def _listed(*args: str) -> list[dict]:
    result = runbook("runs", "--json", "--limit", "1000", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_runs_filters_and_columns(paused_run):
    view, group = paused_run
    if runs.read_run(view.id).state_type != "PAUSED":
        pytest.fail("run this module's tests in file order: the filters need the run still waiting")
    waiting = {item["id"]: item for item in _listed("--waiting")}
    assert view.id in waiting
    # The runbook's target in its own words; the lock key beside it (issue 27: not the lock key as target).
    assert (waiting[view.id]["target"], waiting[view.id]["lock"]) == (f"primary/{group}", f"kafka:primary:group:{group}")
    assert waiting[view.id]["requested_by"] == "alice"
    assert all(item["state"] in ("Suspended", "Paused") for item in waiting.values())
    assert view.id in {item["id"] for item in _listed("--state", "PAUSED", "--runbook", "kafka-replay")}
    assert view.id not in {item["id"] for item in _listed("--state", "completed")}
    assert view.id in {item["id"] for item in _listed("--mine", "--as", "alice")}  # requested by alice
    assert view.id in {item["id"] for item in _listed("--mine", "--as", "carol")}  # @kafka-oncall may approve it
    assert view.id not in {item["id"] for item in _listed("--mine", "--as", "nobody-at-all")}

    piped = runbook("runs", "--waiting", "--limit", "1000")
    assert piped.returncode == 0, piped.stderr
    header, *lines = piped.stdout.splitlines()
    assert header.split("\t")[:6] == ["run", "name", "runbook", "state", "target", "requested by"]
    ours = [line.split("\t") for line in lines if line.startswith(view.id)]
    assert ours and ours[0][:6] == [view.id, view.name, "kafka-replay", "Suspended", f"primary/{group}", "alice"]


# After the filters (tests run in file order): it answers the shared run.
def test_approve_and_reject_take_short_references_and_stay_quiet(paused_run):
    view, _ = paused_run
    refused = runbook("approve", view.id[:8], "--as", "alice")
    assert refused.returncode == 2
    assert "may not approve it" in refused.stderr
    for noise in ("EventsWorker", "Still processing", "Traceback", "telemetry"):
        assert noise not in refused.stderr + refused.stdout
    rejected = runbook("reject", view.name, "--as", "alice", "--reason", "changed my mind", "--json")
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout) == {"run_id": view.id, "name": view.name, "runbook": "kafka-replay",
                                           "approved": False, "by": "alice", "proof": "typed-name",
                                           "verdict": "rejected by alice: changed my mind"}, "the run's own verdict"
    assert wait_until(view.id, finished).state == "Rejected"


@pytest.mark.parametrize("args, expected", [
    (["--limit", "0"], "0 is not in the range 1<=x<=1000"),
    (["--limit", "1001"], "1001 is not in the range"),
    (["--state", "sleepy"], "unknown state sleepy"),
    (["--runbook", "kafka-replya"], "did you mean kafka-replay?"),
])
def test_runs_refuses_bad_options_with_exit_2(args, expected):
    result = runbook("runs", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_approve_exits_2_with_the_reason_when_the_run_itself_refuses_the_answer(clusters, unique):
    """The run judges an answer again; when it refuses one the command's own checks let through (here:
    the plan the answerer was shown, the journal's newest request, is another version than the run's
    current plan), `runbook approve` says so and exits 2, never 'approved'."""
    from mq_runbooks.kit import journal
    from mq_runbooks.kit.records import ApprovalRequested
    from tests.kafka_groups import group_at_end

    _, _, group = group_at_end(clusters, unique, "refused")
    started = runbook("run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}", "-p", "to_earliest=true",
                      "--as", "alice", "--json")
    assert started.returncode == 0, started.stderr
    view = wait_until(json.loads(started.stdout)["run_id"], paused, timeout=90)
    request = journal.last(view.entries, "approval_requested")
    journal.write(view.id, ApprovalRequested(summary=request.summary, **{
        name: request.data[name] for name in ApprovalRequested.model_fields
        if name in request.data and name not in ("data", "plan_digest")},
        plan_digest="0" * 64))
    refused = runbook("approve", view.id, "--as", "carol")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refused by the run: the answer was for another version of the plan" in refused.stderr, refused.stderr
    assert "approved run" not in refused.stdout and "Traceback" not in refused.stderr
    again = wait_until(view.id, lambda v: paused(v) and journal.last(v.entries, "approval_refused"), timeout=60)
    assert journal.last(again.entries, "approval_refused").data["by"] == "carol"
    cancelled = runbook("cancel", view.id, "--as", "carol", "--reason", "test over")
    assert cancelled.returncode == 0, cancelled.stderr
