"""Two workers on a Prefect server backed by PostgreSQL (a private one, started by dev/stack on free
ports beside the shared stack): runs spread over both; one worker killed while runs wait at their
gates; every approved run then completes on the other."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mq_runbooks.integrations.kafka import KafkaClient
from tests.engine.test_durable_runs import wait_for
from tests.kafka_groups import group_at_end
from tests.serve_harness import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUNS = 4


@pytest.fixture(scope="module")
def postgres_prefect():
    """A Prefect server on its own PostgreSQL: its API URL. (Its directory must be readable by the
    postgres user, so not under pytest's private temporary directory.)"""
    home = Path(tempfile.mkdtemp(prefix="mqr-pg-"))
    home.chmod(0o755)
    env = {**os.environ, "STACK_DIR": str(home), "STACK_PREFECT_DB": "postgres",
           "STACK_PREFECT_PORT": str(free_port()), "STACK_POSTGRES_PORT": str(free_port())}
    up = subprocess.run([str(REPO / "dev" / "stack"), "up", "postgres", "prefect"], env=env, capture_output=True,
                        text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield f"http://127.0.0.1:{env['STACK_PREFECT_PORT']}/api"
    finally:
        subprocess.run([str(REPO / "dev" / "stack"), "down", "prefect", "postgres"], env=env, capture_output=True,
                       timeout=120)
        shutil.rmtree(home, ignore_errors=True)


def run_env(api_url: str, workdir: Path) -> dict[str, str]:
    catalog = workdir / "runbooks"
    catalog.mkdir(exist_ok=True)
    (catalog / "kafka-replay.yaml").write_text(
        (REPO / "runbooks" / "kafka-replay.yaml").read_text().replace("timeout: 30m", "timeout: 5m"))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RUNBOOK_", "PREFECT_"))}
    env.update({"PREFECT_API_URL": api_url, "RUNBOOK_PREFECT_API_URL": api_url, "RUNBOOK_CATALOG": str(catalog),
                "RUNBOOK_SNAPSHOT_DIR": str(workdir / "snapshots"),
                "RUNBOOK_POSTMORTEM_DIR": str(workdir / "postmortems"), "RUNBOOK_RUN_ON": "workers",
                "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    return env


def runbook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "runbook"), *args], env=env, capture_output=True, text=True, timeout=180)


def status(env: dict[str, str], run_id: str) -> dict:
    import json

    shown = runbook(env, "status", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


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
        run_ids = []
        for topic, group in made:
            started = runbook(env, "run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}",
                              "-p", "to_earliest=true", "--json")
            assert started.returncode == 0, started.stderr
            import json
            run_ids.append(json.loads(started.stdout)["run_id"])
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
