"""The preloaded run starter on the real stack (app/starter.py): serve's worker forks each run from a
process that has imported Prefect and the flows already, the forked process is named after its run,
and a run that is acting goes on to its end when serve, or a worker, is killed or stopped."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mq_runbooks.app import runs
from mq_runbooks.app.starter import process_name
from mq_runbooks.integrations.kafka import KafkaClient
from mq_runbooks.kit import journal
from tests.app.test_durable_runs import cli, suspended, wait_for
from tests.app.test_serve_alerts import alertmanager_payload
from tests.kafka_groups import group_at_end
from tests.serve_harness import ALERT_TOKEN, ServeProcess, serve_environment


pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def alert_run_at_its_gate(serve: ServeProcess, group: str, unique) -> str:
    """The run an alert on `group` starts through serve, once it waits at its gate."""
    answer = httpx.post(f"{serve.url}/alerts/alertmanager", json=alertmanager_payload(group, unique("fp")),
                        headers={"Authorization": f"Bearer {ALERT_TOKEN}"}, timeout=30)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["started"][0]["run_id"]
    wait_for(lambda: suspended(run_id), 120, "the alert's run suspended at its gate")
    return run_id


def forked_process_of(run_id: str) -> list[int]:
    found = subprocess.run(["pgrep", "-x", process_name(run_id)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.mark.parametrize("stop", ["SIGKILL of serve's process group", "SIGTERM to serve's main process",
                                  "Ctrl-C of a runbook worker"])
def test_runs_are_forked_from_the_starter_and_an_acting_run_outlives_what_started_it(clusters, unique, tmp_path,
                                                                                      stop):
    env = serve_environment(tmp_path)
    env["RUNBOOK_INJECT_FAULT"] = "stall-after:alter-offsets:20"  # a run acting long enough to be watched
    on_worker = "worker" in stop
    serve = ServeProcess(tmp_path, env, runner=not on_worker)
    executing = serve.process
    if on_worker:
        executing = subprocess.Popen([str(Path(sys.executable).parent / "runbook"), "worker", "--limit", "2"],
                                     stdout=open(tmp_path / "worker.log", "wb"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
    try:
        if on_worker:  # it registers the deployments the alert's run belongs to
            wait_for(lambda: b"executing runs" in (tmp_path / "worker.log").read_bytes(), 120, "the worker started")
        config, topic, group = group_at_end(clusters, unique, "starter")
        run_id = alert_run_at_its_gate(serve, group, unique)
        wait_for(lambda: not forked_process_of(run_id), 20, "the run's process left once it suspended")

        answered = cli("approve", run_id, "--as", "bob", env=env)
        assert answered.returncode == 0, answered.stderr
        wait_for(lambda: journal.last(runs.read_run(run_id).entries, "action"), 120, "the approved run acted")
        (pid,) = wait_for(lambda: forked_process_of(run_id), 10, "the process executing the run, named after it")
        starter = parent_of(pid)
        assert parent_of(starter) == executing.pid, "forked by the starter of the process executing runs"
        assert b"forkserver" in Path(f"/proc/{starter}/cmdline").read_bytes()
        assert b"mq_runbooks.app.executor" not in Path(f"/proc/{pid}/cmdline").read_bytes(), \
            "no interpreter of its own"
        assert os.getsid(pid) == pid, "in a session of its own"

        if stop.startswith("SIGKILL"):
            os.killpg(executing.pid, signal.SIGKILL)  # serve and its starter: a crash of the service
        elif stop.startswith("SIGTERM"):
            executing.send_signal(signal.SIGTERM)  # a routine stop (a deploy)
        else:
            executing.send_signal(signal.SIGINT)  # the worker stops its poll and leaves the run be
        executing.wait(timeout=60)
        view = wait_for(lambda: (v := runs.read_run(run_id)).finished and v, 120, "the acting run finished")
        assert view.succeeded, (view.state, view.message, view.entries[-3:])
        assert [e.kind for e in view.entries].count("action") == 1
        with KafkaClient(config) as kafka:
            assert kafka.committed_offsets(group) == {(topic, 0): 0}
        wait_for(lambda: not forked_process_of(run_id), 30, "the run's process exited once it finished")
    finally:
        if executing is not serve.process and executing.poll() is None:
            executing.kill()
        serve.stop()


def test_a_forked_run_whose_process_dies_is_crashed_at_once_and_concluded(clusters, unique, tmp_path):
    """The process of an acting run killed while serve lives: serve's worker sees its child die and
    marks the run Crashed at once (not after the heartbeat window), and serve's sweep concludes it."""
    env = serve_environment(tmp_path)
    env["RUNBOOK_INJECT_FAULT"] = "stall-after:alter-offsets:30"
    serve = ServeProcess(tmp_path, env)
    try:
        group = group_at_end(clusters, unique, "childdies")[2]
        run_id = alert_run_at_its_gate(serve, group, unique)
        answered = cli("approve", run_id, "--as", "bob", env=env)
        assert answered.returncode == 0, answered.stderr
        wait_for(lambda: journal.last(runs.read_run(run_id).entries, "action"), 120, "the approved run acted")
        (pid,) = wait_for(lambda: forked_process_of(run_id), 10, "the process executing the run")

        os.kill(pid, signal.SIGKILL)
        view = wait_for(lambda: (v := runs.read_run(run_id)).state_type == "CRASHED" and v, 15,
                        "the run Crashed once its process died")
        assert "exited by signal 9 while the run was Running" in view.message, view.message
        view = wait_for(lambda: journal.last((v := runs.read_run(run_id)).entries, "outcome") and v, 90,
                        "serve's sweep concluded the crash")
        outcome = journal.last(view.entries, "outcome")
        assert outcome.data["outcome"] == "crashed", view.entries[-3:]
        assert "after applying" in outcome.summary, outcome.summary
        assert serve.process.poll() is None, "serve lives on"
    finally:
        serve.stop()
