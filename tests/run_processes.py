"""The processes executing a run: an executor started as an interpreter of its own (its command line
names the run), or a child of a preloaded starter (named after the run: app/starter.py)."""
from __future__ import annotations

import subprocess

from mq_runbooks.app.starter import process_name


def executors_of(run_id: str) -> list[str]:
    own = subprocess.run(["pgrep", "-f", f"mq_runbooks.app.executor.*{run_id}|PREFECT__FLOW_RUN_ID={run_id}"],
                         capture_output=True, text=True).stdout.split()
    forked = subprocess.run(["pgrep", "-x", process_name(run_id)], capture_output=True, text=True).stdout.split()
    return own + forked
