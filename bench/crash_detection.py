"""Benchmark: how long after its process is killed a run is marked Crashed (the heartbeat automation
of mq_runbooks/kit/crashes.py), and that a live run acting for minutes while it heartbeats is not.

On a private Prefect server (SQLite, dev/stack on free ports; another version of the engine using the
shared server on 4200 would set the automation's window back to its own), --runs kafka-replay runs are
started as `runbook run` starts them, approved, and stall for an hour right after moving the offsets
(RUNBOOK_INJECT_FAULT=stall-after:alter-offsets) with their process alive and heartbeating. After
--live-s seconds of that, each must still be Running (no Crashed state in its history). Then their
executors are killed (SIGKILL) one every --stagger-s seconds (so the kills fall at different points of
the 30 s heartbeat period), and for each the time from the kill to the Crashed state's timestamp is
recorded. Expected: between ZOMBIE_AFTER_S - HEARTBEAT_S and ZOMBIE_AFTER_S, plus the server's
evaluation lag.

    .venv/bin/python bench/crash_detection.py --runs 5

Results are appended to bench/results/crash_detection.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from uuid import UUID

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from mq_runbooks.kit.crashes import HEARTBEAT_S, ZOMBIE_AFTER_S  # noqa: E402
from tests.app.test_durable_runs import executors_of, wait_for  # noqa: E402
from tests.kafka_groups import group_at_end  # noqa: E402
from tests.private_prefect import private_prefect, run_env, runbook, start_replay, status  # noqa: E402


def crashed_at(api_url: str, run_id: str) -> dt.datetime | None:
    """When the run's Crashed state was set (the server's timestamp), if it has one."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(run_id))
    return next((state.timestamp for state in states if state.is_crashed()), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--live-s", type=float, default=150, help="how long the stalled runs act alive first")
    parser.add_argument("--stagger-s", type=float, default=11, help="seconds between two kills")
    args = parser.parse_args()
    clusters = load_clusters(REPO / "clusters.yaml")
    counter = iter(range(10**6))
    unique = lambda prefix: f"{prefix}-{os.getpid()}-{next(counter)}-{time.time_ns() % 10**8}"  # noqa: E731
    load_before = os.getloadavg()
    with private_prefect("sqlite") as server, tempfile.TemporaryDirectory() as workdir:
        env = {**run_env(server.api_url, Path(workdir), run_on="local"),
               "RUNBOOK_INJECT_FAULT": "stall-after:alter-offsets"}
        run_ids = [start_replay(env, group_at_end(clusters, unique, "bench-crash")[2]) for _ in range(args.runs)]
        for run_id in run_ids:
            wait_for(lambda: status(env, run_id)["state"] == "Suspended", 300, f"{run_id} at its gate", every=1)
            answered = runbook(env, "approve", run_id, "--as", "bob")
            assert answered.returncode == 0, answered.stderr
        for run_id in run_ids:
            wait_for(lambda: "action" in [e["kind"] for e in status(env, run_id)["journal"]], 300,
                     f"{run_id} applied its change", every=1)
        live_from = time.monotonic()
        print(f"{len(run_ids)} runs applied their change and stall alive; waiting {args.live_s:.0f}s", flush=True)
        while time.monotonic() - live_from < args.live_s:
            falsely = [run_id for run_id in run_ids if crashed_at(server.api_url, run_id)]
            assert not falsely, f"live runs marked Crashed: {falsely}"
            time.sleep(5)
        states = {run_id: status(env, run_id)["state"] for run_id in run_ids}
        assert set(states.values()) == {"Running"}, states
        live_s = time.monotonic() - live_from

        killed: dict[str, dt.datetime] = {}
        for index, run_id in enumerate(run_ids):
            if index:
                time.sleep(args.stagger_s)
            pids = executors_of(run_id)
            assert pids, f"no executor process of {run_id}"
            killed[run_id] = dt.datetime.now(dt.timezone.utc)
            for pid in pids:
                os.kill(int(pid), signal.SIGKILL)
        detected: dict[str, float] = {}
        deadline = time.monotonic() + ZOMBIE_AFTER_S + 3 * HEARTBEAT_S + 120
        while len(detected) < len(run_ids) and time.monotonic() < deadline:
            for run_id in run_ids:
                if run_id not in detected and (at := crashed_at(server.api_url, run_id)):
                    detected[run_id] = (at - killed[run_id]).total_seconds()
                    print(f"{run_id}: Crashed {detected[run_id]:.1f}s after SIGKILL", flush=True)
            time.sleep(1)
    undetected = [run_id for run_id in run_ids if run_id not in detected]
    seconds = sorted(detected.values())
    row = (f"| {ZOMBIE_AFTER_S} s | {len(run_ids)} | {live_s:.0f} s, none crashed | "
           + (f"{statistics.median(seconds):.1f} s | {seconds[0]:.1f}-{seconds[-1]:.1f} s | " if seconds else "- | - | ")
           + f"{len(undetected)} |")
    results = REPO / "bench" / "results" / "crash_detection.md"
    if not results.exists():
        results.write_text("# SIGKILL -> Crashed (bench/crash_detection.py)\n")
    with results.open("a") as out:
        out.write(f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
                  f"(load {' '.join(f'{x:.2f}' for x in load_before)}; heartbeat every {HEARTBEAT_S} s; "
                  f"private Prefect on SQLite)\n\n"
                  "| window | runs | alive and heartbeating first | SIGKILL -> Crashed p50 | range | not detected |\n"
                  "|---|---|---|---|---|---|\n" + row + "\n\n"
                  + "Each: " + ", ".join(f"{s:.1f} s" for s in seconds) + "\n")
    print(row)
    return 1 if undetected else 0


if __name__ == "__main__":
    sys.exit(main())
