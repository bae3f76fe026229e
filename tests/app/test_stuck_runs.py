"""`runbook status` / `runbook runs` say why a run does not move, against the real Prefect server:
a due run nobody executes, one whose executor failed to start, one whose deployment nothing polls,
and one waiting for the lock another run holds."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled

from mq_runbooks.app import runs, stuck
from mq_runbooks.base.settings import Settings
from mq_runbooks.kit.lock import lock_tag
from tests.app.test_cli import runbook
from tests.flows.runbook_harness import paused, runbook_env, start_runbook, wait_until  # noqa: F401 (fixture)
from tests.flows.test_kafka_replay import group_at_end, kafka_config  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


DUE_AGO = dt.timedelta(minutes=10)


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    return Settings.from_environ()


@pytest.fixture
def orphan_run(settings):
    """create(deployment_id=None) -> run id: a kafka-replay run that was due ten minutes ago, created on
    the server with nobody told to execute it (deleted afterwards)."""
    from mq_runbooks.flows.kafka_replay import kafka_replay

    made = []

    def create(deployment_id=None) -> str:
        group = f"stuck-{uuid.uuid4().hex[:8]}"
        parameters = {"params": {"cluster": "primary", "group": group, "to_earliest": True},
                      "requested_by": "alice", "trigger": {}}
        tags = [runs.RUNBOOK_TAG, "runbook:kafka-replay", lock_tag(f"kafka:primary:group:{group}")]
        state = Scheduled(scheduled_time=dt.datetime.now(dt.timezone.utc) - DUE_AGO)
        with get_client(sync_client=True) as client:
            if deployment_id is None:
                flow_run = client.create_flow_run(kafka_replay, parameters=parameters, tags=tags, state=state)
            else:
                flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters, tags=tags,
                                                                  state=state)
        made.append(flow_run.id)
        return str(flow_run.id)

    yield create
    with get_client(sync_client=True) as client:
        for run_id in made:
            try:
                client.delete_flow_run(run_id)
            except ObjectNotFound:  # went with its deployment
                pass


def cli_env(settings) -> dict[str, str]:
    return {"RUNBOOK_SNAPSHOT_DIR": str(settings.snapshot_dir)}


def test_a_due_run_nobody_executes_says_so_in_status_and_runs(settings, orphan_run):
    run_id = orphan_run()
    shown = runbook("status", run_id, env=cli_env(settings))
    assert shown.returncode == 0, shown.stderr
    assert "stuck" in shown.stdout and "not picked up" in shown.stdout, shown.stdout
    assert "its executor never started" in shown.stdout, shown.stdout
    assert "(10m " in shown.stdout, shown.stdout  # since when: ten minutes ago

    listed = runbook("runs", "--state", "scheduled", "--limit", "200", "--json", env=cli_env(settings))
    assert listed.returncode == 0, listed.stderr
    ours = next(r for r in json.loads(listed.stdout) if r["id"] == run_id)
    assert ours["stuck"] and "not picked up" in ours["stuck"]
    table = runbook("runs", "--state", "scheduled", "--limit", "200", env=cli_env(settings))
    row = next(line for line in table.stdout.splitlines() if line.startswith(run_id))
    assert "(stuck)" in row and "STUCK: " in row, row


def test_an_executor_that_failed_to_start_is_quoted_from_its_log(settings, orphan_run):
    run_id = orphan_run()
    log = runs.run_log_path(settings, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # the executor `runbook run` starts, with a configuration it refuses
        failed = subprocess.run([sys.executable, "-m", "mq_runbooks.app.executor", run_id], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "RUNBOOK_NO_SUCH_SETTING": "1"},
                                timeout=120)
    assert failed.returncode != 0
    reason = stuck.why_stuck(settings, runs.read_run(run_id))
    assert reason is not None and "its executor's log" in reason and "RUNBOOK_NO_SUCH_SETTING" in reason, reason


def test_a_local_run_with_no_executor_here_says_where_to_look(settings, orphan_run):
    """A run of a deployment in no pool (`runbook run`'s `<id>/local`) runs where it was started."""
    from mq_runbooks.flows.kafka_replay import kafka_replay

    name = f"test-local-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(kafka_replay)
        deployment_id = client.create_deployment(flow_id=flow_id, name=name,
                                                 entrypoint="mq_runbooks.flows.kafka_replay:kafka_replay")
    try:
        run_id = orphan_run(deployment_id)
        reason = stuck.why_stuck(settings, runs.read_run(run_id))
        assert reason is not None and "no executor started here" in reason, reason
        assert f"runbook cancel {run_id}" in reason
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)


def test_a_run_waiting_for_a_lock_names_the_run_that_holds_it(group_at_end, runbook_env):
    topic, group = group_at_end
    settings, catalog = runbook_env("kafka-replay", RUNBOOK_LOCK_WAIT_S="60")
    holder = start_runbook(settings, catalog, "kafka-replay", group=group, to_earliest="true")
    holder_view = wait_until(holder, paused)
    waiting = start_runbook(settings, catalog, "kafka-replay", group=group, shift_by="-2")
    try:
        view = wait_until(waiting, lambda v: stuck.why_stuck(settings, v) is not None)
        reason = stuck.why_stuck(settings, view)
        assert f"for the lock 'kafka:primary:group:{group}', held by {holder_view.name} ({holder}" in reason, reason
        shown = runbook("status", waiting, env={"RUNBOOK_SNAPSHOT_DIR": str(settings.snapshot_dir)})
        assert "stuck" in shown.stdout and holder in shown.stdout, shown.stdout
    finally:
        runs.answer_gate(settings, catalog, holder, False, "bob", "test over")
    # Once the lock is free the waiting run moves on to its own gate, and is no longer stuck.
    view = wait_until(waiting, paused)
    assert stuck.why_stuck(settings, view) is None
    runs.answer_gate(settings, catalog, waiting, False, "bob", "test over")


def test_a_pool_with_no_worker_online_is_named(settings, orphan_run):
    from prefect.client.schemas.actions import WorkPoolCreate

    from mq_runbooks.flows.kafka_replay import kafka_replay

    pool = f"test-no-workers-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow(kafka_replay)
        deployment_id = client.create_deployment(flow_id=flow_id, name=pool, work_pool_name=pool,
                                                 entrypoint="mq_runbooks.flows.kafka_replay:kafka_replay")
    try:
        reason = stuck.why_stuck(settings, runs.read_run(orphan_run(deployment_id)))
        assert reason is not None and f"no worker of work pool {pool!r} is online (none has ever started)" in reason
        assert f"runbook worker (RUNBOOK_WORK_POOL={pool})" in reason
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
            client.delete_work_pool(pool)
