"""A private Prefect server for tests that must not touch the shared one on 4200 (restart it, point
runs at PostgreSQL): started by dev/stack on free ports in a directory of its own, beside the shared
stack, and the `runbook` CLI run against it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.serve_harness import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STACK = str(REPO / "dev" / "stack")


class PrivatePrefect:
    """dev/stack's Prefect service (and PostgreSQL with db="postgres") in `home`, on free ports."""

    def __init__(self, home: Path, db: str = "sqlite") -> None:
        self.home = home
        self.services = ["postgres", "prefect"] if db == "postgres" else ["prefect"]
        self.env = {**os.environ, "STACK_DIR": str(home), "STACK_PREFECT_DB": db,
                    "STACK_PREFECT_PORT": str(free_port())}
        if db == "postgres":
            self.env["STACK_POSTGRES_PORT"] = str(free_port())
        self.api_url = f"http://127.0.0.1:{self.env['STACK_PREFECT_PORT']}/api"

    def stack(self, command: str, *services: str) -> subprocess.CompletedProcess:
        done = subprocess.run([STACK, command, *services], env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"dev/stack {command} {' '.join(services)}: {done.stdout}{done.stderr}"
        return done

    def up(self) -> None:
        self.stack("up", *self.services)

    def down(self) -> None:
        subprocess.run([STACK, "down", *reversed(self.services)], env=self.env, capture_output=True, timeout=120)


@contextmanager
def private_prefect(db: str = "sqlite") -> Iterator[PrivatePrefect]:
    """A private Prefect server, up for the block, stopped and removed after it. (Its directory must be
    readable by the postgres user, so not under pytest's private temporary directory.)"""
    home = Path(tempfile.mkdtemp(prefix=f"mqr-{db}-"))
    home.chmod(0o755)
    server = PrivatePrefect(home, db)
    try:
        server.up()
        yield server
    finally:
        server.down()
        shutil.rmtree(home, ignore_errors=True)


def run_env(api_url: str, workdir: Path, run_on: str = "workers", timeout: str = "5m") -> dict[str, str]:
    """The environment of `runbook` commands against the server at `api_url`: a catalog copy with a
    short gate timeout, snapshots and drafts under `workdir`, no RUNBOOK_/PREFECT_ setting of the caller."""
    catalog = workdir / "runbooks"
    catalog.mkdir(exist_ok=True)
    (catalog / "kafka-replay.yaml").write_text(
        (REPO / "mq_runbooks" / "runbooks" / "kafka-replay.yaml").read_text().replace("timeout: 30m", f"timeout: {timeout}"))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("RUNBOOK_", "PREFECT_"))}
    env.update({"PREFECT_API_URL": api_url, "RUNBOOK_PREFECT_API_URL": api_url, "RUNBOOK_CATALOG": str(catalog),
                "RUNBOOK_SNAPSHOT_DIR": str(workdir / "snapshots"),
                "RUNBOOK_POSTMORTEM_DIR": str(workdir / "postmortems"), "RUNBOOK_RUN_ON": run_on,
                "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
    return env


def runbook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "runbook"), *args], env=env, capture_output=True, text=True, timeout=180)


def status(env: dict[str, str], run_id: str) -> dict:
    shown = runbook(env, "status", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def wait_state(env: dict[str, str], run_id: str, states: set[str], timeout: float, what: str) -> dict:
    """`runbook status --json` of the run once its state is one of `states`; on timeout an
    AssertionError saying what it was last, with its journal and the end of its process's log."""
    from tests.app.test_durable_runs import wait_for

    last: dict = {}

    def reached() -> dict | None:
        last.update(status(env, run_id))
        return dict(last) if last["state"] in states else None

    try:
        return wait_for(reached, timeout, what, every=1)
    except AssertionError as exc:
        log = Path(env["RUNBOOK_SNAPSHOT_DIR"]).parent / "run-logs" / f"{run_id}.log"
        raise AssertionError(
            f"{exc}; last {last.get('state')}: {last.get('message')}; stuck: {last.get('stuck')}; journal: "
            f"{[entry['kind'] for entry in last.get('journal', [])]}; its log ends: "
            f"{log.read_text()[-1500:] if log.exists() else '(none)'}") from None


def start_replay(env: dict[str, str], group: str) -> str:
    """`runbook run kafka-replay` of `group` to its earliest offsets: the run's id."""
    started = runbook(env, "run", "kafka-replay", "-p", "cluster=primary", "-p", f"group={group}",
                      "-p", "to_earliest=true", "--json")
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout)["run_id"]
