"""Two workers on a Prefect server backed by PostgreSQL (a private one, started by dev/stack on free
ports beside the shared stack): runs spread over both; one worker killed while runs wait at their
gates; every approved run then completes on the other."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest
from mq_runbooks.integrations.kafka import KafkaClient
from tests.app.test_durable_runs import wait_for
from tests.kafka_groups import group_at_end
from tests.private_prefect import BIN, private_prefect, run_env, runbook, start_replay, status

pytestmark = pytest.mark.slow  # end to end: `dev/test --fast` leaves this module out


RUNS = 4


@pytest.fixture(scope="module")
def postgres_prefect():
    """A Prefect server on its own PostgreSQL: its API URL."""
    with private_prefect("postgres") as server:
        yield server.api_url


def groups_at_end(clusters, unique) -> list[tuple[str, str]]:
    return [group_at_end(clusters, unique, "pgw")[1:] for _ in range(RUNS)]


def test_two_workers_share_the_runs_and_one_survives_the_other(postgres_prefect, clusters, unique, tmp_path):
    env = run_env(postgres_prefect, tmp_path)
    workers = {}
    for name in ("w1", "w2"):
        log = open(tmp_path / f"{name}.log", "wb")
        workers[name] = subprocess.Popen([str(BIN / "runbook"), "worker", "--limit", "1", "--name", name], env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for name in workers:
            wait_for(lambda: "executing runs" in (tmp_path / f"{name}.log").read_text(), 120,
                     f"worker {name} started", every=1)
        made = groups_at_end(clusters, unique)
        run_ids = [start_replay(env, group) for topic, group in made]
        for run_id in run_ids:
            wait_for(lambda: status(env, run_id)["state"] == "Suspended", 180, f"run {run_id} at its gate", every=1)
        logs = {name: (tmp_path / f"{name}.log").read_text() for name in workers}
        assert all(any(run_id in logs[name] for run_id in run_ids) for name in workers), \
            "each worker executed some of the runs"

        os.killpg(workers["w1"].pid, signal.SIGKILL)  # a machine lost while its runs wait
        workers["w1"].wait(timeout=30)
        for run_id in run_ids:
            answered = runbook(env, "approve", run_id, "--as", "bob")
            assert answered.returncode == 0, answered.stderr
        for run_id in run_ids:
            wait_for(lambda: status(env, run_id)["state"] == "Completed", 240, f"run {run_id} completed", every=1)
        with KafkaClient(clusters.kafka_cluster("primary").client_config()) as kafka:
            for topic, group in made:
                assert kafka.committed_offsets(group) == {(topic, 0): 0}
        w2 = (tmp_path / "w2.log").read_text()
        assert all(w2.count(run_id) >= 1 for run_id in run_ids), "the surviving worker executed every resumed run"
    finally:
        for process in workers.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
