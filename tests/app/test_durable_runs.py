"""Durable runs on the real stack: a run waiting at its gate holds no process and outlives whatever
executed it (a `runbook run` process, `runbook serve` killed or stopped); an approval then acts exactly
once; a run killed while applying is concluded with what it applied, and the restore it prints works."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mq_runbooks.app import runs, starts
from mq_runbooks.base.catalog import load_catalog
from mq_runbooks.base.settings import Settings
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit import journal, lock
from mq_runbooks.kit.postmortem.store import find_by_run
from tests.app.test_serve_alerts import alertmanager_payload
from tests.kafka_groups import group_at_end
from tests.run_processes import executors_of
from tests.serve_harness import ALERT_TOKEN, ServeProcess, serve_environment

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNBOOK = str(Path(sys.executable).parent / "runbook")


def wait_for(condition, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([RUNBOOK, *args], capture_output=True, text=True, timeout=180, env=env)


def slot_taken(key: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return bool(client.read_global_concurrency_limit_by_name(lock.limit_name(key)).active_slots)


def suspended(run_id: str) -> runs.RunView | None:
    view = runs.read_run(run_id)
    return view if view.state == "Suspended" and journal.last(view.entries, "approval_requested") else None


def replay_at_its_gate(clusters, unique, tmp_path, monkeypatch, prefix: str, fault: str | None = None):
    """A kafka-replay run (to_earliest) started as `runbook run` starts it, suspended at its gate:
    (run id, settings, (kafka config, topic, group))."""
    monkeypatch.setenv("RUNBOOK_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    monkeypatch.setenv("RUNBOOK_POSTMORTEM_DIR", str(tmp_path / "postmortems"))
    if fault:
        monkeypatch.setenv("RUNBOOK_INJECT_FAULT", fault)
    made = group_at_end(clusters, unique, prefix)
    settings = Settings.from_environ()
    runbook = load_catalog(settings.catalog).get("kafka-replay")
    run_id = starts.start_run(settings, runbook, runbook.validate_parameters(
        {"cluster": "primary", "group": made[2], "to_earliest": "true"}), requested_by="alice")
    wait_for(lambda: suspended(run_id), 90, "the run suspended at its gate")
    return run_id, settings, made


def test_a_waiting_run_holds_no_process_keeps_its_lock_and_acts_once(clusters, unique, tmp_path, monkeypatch):
    run_id, settings, (config, topic, group) = replay_at_its_gate(clusters, unique, tmp_path, monkeypatch, "durable")
    wait_for(lambda: not executors_of(run_id), 20, "the executor left once the run suspended")
    key = f"kafka:primary:group:{group}"
    assert slot_taken(key), "the lock stays with the run while it waits with no process"

    answered = cli("approve", run_id, "--as", "bob")
    assert answered.returncode == 0, answered.stderr
    view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, 90, "the approved run finished")
    assert view.succeeded, (view.state, view.message)
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 0}, "offsets as planned"
    kinds = [entry.kind for entry in view.entries]
    assert kinds.count("action") == 1 and kinds.count("parameters") == 1 and kinds.count("lock") == 1
    assert kinds.count("approval_requested") == 1 and kinds.count("approval") == 1 and kinds.count("outcome") == 1
    assert kinds.index("plan") < kinds.index("approval_requested") < kinds.index("approval") < kinds.index("action")
    assert not slot_taken(key), "the lock is released when the run ends"


def test_serve_killed_or_stopped_while_runs_wait_then_the_approvals_act(clusters, unique, tmp_path):
    """SIGKILL of serve (its worker) while a run waits; serve started again; approve → acts once.
    Then the same with a SIGTERM to serve's main PID only."""
    env = serve_environment(tmp_path)
    headers = {"Authorization": f"Bearer {ALERT_TOKEN}"}
    waiting = []
    serve = ServeProcess(tmp_path, env)
    try:
        for how in (signal.SIGKILL, signal.SIGTERM):
            config, topic, group = group_at_end(clusters, unique, "servekill")
            payload = alertmanager_payload(group, unique("fp"))
            answer = httpx.post(f"{serve.url}/alerts/alertmanager", json=payload, headers=headers, timeout=30)
            assert answer.status_code == 202, answer.text
            run_id = answer.json()["started"][0]["run_id"]
            wait_for(lambda: suspended(run_id), 120, "the alert's run suspended at its gate")
            if how == signal.SIGKILL:
                os.killpg(serve.process.pid, signal.SIGKILL)
            else:
                serve.process.send_signal(signal.SIGTERM)
            serve.process.wait(timeout=30)
            assert runs.read_run(run_id).state == "Suspended", "the run still waits with serve gone"
            waiting.append((run_id, config, topic, group))
            serve = ServeProcess(tmp_path, env)
            answered = cli("approve", run_id, "--as", "bob", env=env)
            assert answered.returncode == 0, answered.stderr
            view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, 120, "the approved run finished")
            assert view.succeeded, (view.state, view.message, view.entries[-3:])
            with KafkaClient(config) as kafka:
                assert kafka.committed_offsets(group) == {(topic, 0): 0}
            assert [e.kind for e in view.entries].count("action") == 1
    finally:
        serve.stop()


@pytest.mark.parametrize("how", [signal.SIGKILL])
def test_a_run_killed_while_applying_is_concluded_and_its_restore_works(clusters, unique, tmp_path, monkeypatch, how):
    from mq_runbooks.kit.crashes import HEARTBEAT_S, ZOMBIE_AFTER_S, conclude_crashed

    run_id, settings, (config, topic, group) = replay_at_its_gate(clusters, unique, tmp_path, monkeypatch, "applykill", fault="stall-after:alter-offsets")
    assert cli("approve", run_id, "--as", "bob").returncode == 0
    wait_for(lambda: journal.last(runs.read_run(run_id).entries, "action"), 90, "the change was applied")
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 0}
    executors = wait_for(lambda: executors_of(run_id), 10, "the executor applying the change")
    for pid in executors:
        os.kill(int(pid), how)
    key = f"kafka:primary:group:{group}"
    assert slot_taken(key), "the lock is held until the crash is concluded"

    wait_for(lambda: runs.read_run(run_id).state_type == "CRASHED", ZOMBIE_AFTER_S + 3 * HEARTBEAT_S + 60,
             "the killed run marked Crashed by its missing heartbeats", every=2)
    conclude_crashed()
    assert not slot_taken(key), "concluding the crash frees the lock"
    outcome = journal.last(runs.read_run(run_id).entries, "outcome")
    assert outcome.data["outcome"] == "crashed" and "after applying" in outcome.summary
    draft = find_by_run(settings.postmortem_dir, "kafka-replay", run_id)
    assert draft is not None and draft.meta["outcome"] == "crashed"
    restore = re.search(r"Restore with: (runbook run .*?)(?: \(|$)", outcome.summary).group(1)
    assert "from_file=" in restore

    monkeypatch.delenv("RUNBOOK_INJECT_FAULT")
    started = subprocess.run(restore.split(), capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert started.returncode == 0, started.stderr
    restore_id = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", started.stdout).group(0)
    wait_for(lambda: suspended(restore_id), 90, "the restore run at its gate")
    assert cli("approve", restore_id, "--as", "bob").returncode == 0
    view = wait_for(lambda: (v := runs.read_run(restore_id)).finished and v, 90, "the restore finished")
    assert view.succeeded, (view.state, view.message)
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 2}, "the restore put the offsets back"


def test_cancel_stops_a_waiting_run_frees_its_lock_and_drafts_its_postmortem(clusters, unique, tmp_path, monkeypatch):
    run_id, settings, (config, topic, group) = replay_at_its_gate(clusters, unique, tmp_path, monkeypatch, "cancel")

    # The Prefect UI's resume form: no default decision, so a form sent without one is refused by
    # Prefect itself, and the run waits on.
    from uuid import UUID

    from prefect.flow_runs import resume_flow_run

    for empty in ({}, {"by": "bob"}):
        with pytest.raises(RuntimeError, match="decision"):
            resume_flow_run(UUID(run_id), run_input=empty)
    assert runs.read_run(run_id).state == "Suspended"

    refused = cli("cancel", run_id, "--as", "mallory", "--reason", "mine now")
    assert refused.returncode == 2 and "mallory is not an approver" in refused.stderr

    cancelled = cli("cancel", run_id[:8], "--as", "alice", "--reason", "the consumer recovered by itself")
    assert cancelled.returncode == 0, cancelled.stderr
    view = runs.read_run(run_id)
    assert view.state_type == "CANCELLED" and "cancelled by alice" in view.message
    outcome = journal.last(view.entries, "outcome")
    assert outcome.data["outcome"] == "cancelled" and "the consumer recovered" in outcome.summary
    assert not slot_taken(f"kafka:primary:group:{group}")
    assert find_by_run(settings.postmortem_dir, "kafka-replay", run_id).meta["outcome"] == "cancelled"
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 2}, "nothing was changed"

    again = cli("cancel", run_id, "--as", "alice", "--reason", "twice")
    assert again.returncode == 2 and "has already ended (Cancelled)" in again.stderr


def test_a_crash_given_to_a_run_waiting_at_its_gate_is_undone(clusters, unique, tmp_path, monkeypatch):
    """A suspended run sends no heartbeats (it has no process, on purpose), and the server's crash
    automation can still fire on it: the engine sets its Suspended state again, and it acts once approved."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from mq_runbooks.kit.crashes import conclude_crashed

    run_id, settings, (config, topic, group) = replay_at_its_gate(clusters, unique, tmp_path, monkeypatch, "falsecrash")
    with get_client(sync_client=True) as client:  # what the automation does
        client.set_flow_run_state(UUID(run_id), Crashed(message="no heartbeat for 120s"), force=True)
    assert run_id not in conclude_crashed(), "the sweep does not conclude it"
    view = runs.read_run(run_id)
    assert view.state == "Suspended" and journal.last(view.entries, "outcome") is None

    assert cli("approve", run_id, "--as", "bob").returncode == 0
    view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, 90, "the approved run finished")
    assert view.succeeded, (view.state, view.message)
    with KafkaClient(config) as kafka:
        assert kafka.committed_offsets(group) == {(topic, 0): 0}


def test_a_run_that_crashed_before_its_process_started_is_due_again(clusters, unique, tmp_path):
    """The worker could not submit a run (the Prefect server answered 503 while it labelled it): the
    run is made due again rather than concluded, up to three crashes, so the alert is not lost."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from mq_runbooks.app.workers import register
    from mq_runbooks.kit.crashes import RESUBMIT_AT_MOST, conclude_crashed

    env = serve_environment(tmp_path)
    register(load_catalog(Path(env["RUNBOOK_CATALOG"])), env["RUNBOOK_DEPLOYMENT"], env["RUNBOOK_WORK_POOL"])
    serve = ServeProcess(tmp_path, env, runner=False)  # nobody executes the runs yet
    worker = None
    message = ("Failed to submit flow run to infrastructure: PrefectHTTPStatusError: Server error "
               "'503 Service Unavailable' for url 'http://127.0.0.1:4200/api/flow_runs/.../labels'")
    try:
        started = {}
        for name in ("again", "limit"):
            config, topic, group = group_at_end(clusters, unique, name)
            answer = httpx.post(f"{serve.url}/alerts/alertmanager", json=alertmanager_payload(group, unique("fp")),
                                headers={"Authorization": f"Bearer {ALERT_TOKEN}"}, timeout=30)
            assert answer.status_code == 202, answer.text
            started[name] = (answer.json()["started"][0]["run_id"], config, topic, group)

        def crash(run_id: str) -> None:  # what the worker reports
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)

        limited = started["limit"][0]
        for _ in range(RESUBMIT_AT_MOST):
            crash(limited)
            assert conclude_crashed({limited: message}) == [], "made due again, not concluded"
            assert runs.read_run(limited).state_type == "SCHEDULED" and not runs.read_run(limited).entries
        crash(limited)
        assert conclude_crashed({limited: message}) == [limited], "concluded after its last crash"
        outcome = journal.last(runs.read_run(limited).entries, "outcome")
        assert outcome.data["outcome"] == "crashed" and "before changing anything" in outcome.summary

        run_id, config, topic, group = started["again"]
        crash(run_id)
        assert conclude_crashed({run_id: message}) == []
        worker = subprocess.Popen([RUNBOOK, "worker", "--limit", "2"], stdout=open(tmp_path / "worker.log", "wb"),
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(lambda: suspended(run_id), 120, "the run due again executed by the worker, now at its gate")
        assert cli("approve", run_id, "--as", "bob", env=env).returncode == 0
        view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, 120, "the approved run finished")
        assert view.succeeded, (view.state, view.message, view.entries[-3:])
        assert [e.kind for e in view.entries].count("action") == 1
        with KafkaClient(config) as kafka:
            assert kafka.committed_offsets(group) == {(topic, 0): 0}
    finally:
        if worker is not None:
            worker.kill()
        serve.stop()
