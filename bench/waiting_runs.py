"""Benchmark: many runs waiting at their gates at once, on one `runbook serve` (its embedded worker)
on the local stack.

For N in --waiting (e.g. 0 50 200): alerts start N kafka-replay runs (each on its own group, each
planning a real change) and the bench waits until all N are suspended at their gates. Then it
measures, with those N waiting:
  - processes: executor processes alive (a waiting run should hold none) and their total RSS;
    serve's own RSS;
  - start latency of a new alert's run: POST -> the run's first journal line (median of --probes);
  - approval latency: once those probe runs wait at their gates, each is approved (the API call
    `runbook approve` makes) and the time until its change is applied (the journal's action entry)
    is measured, one after the other;
  - the reference, in the same round: a fresh `python -c "import prefect"` (median of 3).
At the end all waiting runs are approved and must all complete (their offsets moved).

    .venv/bin/python bench/waiting_runs.py --waiting 0 50 200 --probes 10

Results are appended to bench/results/waiting_runs.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from tests.kafka_groups import commit_at_end, topic_of_two  # noqa: E402
from tests.serve_harness import ALERT_TOKEN, ServeProcess, serve_environment  # noqa: E402

from reference import import_prefect_median_s  # noqa: E402  (bench/ is this script's folder)

AUTH = {"Authorization": f"Bearer {ALERT_TOKEN}"}


def alert(group: str) -> dict:
    labels = {"alertname": "KafkaConsumerGroupStuck", "severity": "page", "cluster": "primary",
              "consumergroup": group}
    return {"version": "4", "status": "firing", "receiver": "bench", "groupLabels": {}, "commonLabels": labels,
            "commonAnnotations": {}, "externalURL": "", "groupKey": f"bench-{group}", "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                        "startsAt": dt.datetime.now(dt.timezone.utc).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": uuid.uuid4().hex[:16]}]}


def make_groups(config: dict, topic: str, count: int) -> list[str]:
    return [commit_at_end(config, topic, f"bench-wait-{uuid.uuid4().hex[:10]}") for _ in range(count)]


ASKED_AGAIN = {"count": 0}  # runs whose plan moved while they waited (the alert's 15-minute window), approved again
# Runs seen Crashed and then going on: made due again by serve (they never started), or put back at
# their gate (the zombie automation crashed a run already suspended there: a heartbeat it sent just
# before suspending reached the server after its Suspended state).
CRASHED_THEN_ON = {"count": 0}
RESENT = {"count": 0}  # notifications answered 503 (the Prefect server busy) and sent again


def post(serve: ServeProcess, group: str) -> str:
    """Send an alert as Alertmanager does: a 503 (nothing started) is sent again after Retry-After."""
    payload = alert(group)
    for _ in range(20):
        answer = httpx.post(f"{serve.url}/alerts/alertmanager", json=payload, headers=AUTH, timeout=60)
        if answer.status_code != 503:
            answer.raise_for_status()
            return answer.json()["started"][0]["run_id"]
        RESENT["count"] += 1
        time.sleep(float(answer.headers.get("retry-after", "1")))
    raise SystemExit(f"serve answered 503 to one alert 20 times: {answer.text}")


def states(run_ids: list[str]) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for start in range(0, len(run_ids), 200):
            chunk = [uuid.UUID(r) for r in run_ids[start:start + 200]]
            for run in client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=200):
                found[str(run.id)] = run.state.name if run.state else "?"
    return found


def wait_all(run_ids: list[str], state: str, timeout: float) -> float:
    """Until every run is in `state`; a run that ended otherwise (failed, or still crashed after serve's
    sweeps had 90 s to make a run that never started due again) stops the bench."""
    started = time.monotonic()
    crashed_since: dict[str, float] = {}
    while True:
        now = states(run_ids)
        if all(now.get(r) == state for r in run_ids):
            return time.monotonic() - started
        for run_id, name in now.items():
            if name == "Crashed" and run_id not in crashed_since:
                crashed_since[run_id] = time.monotonic()
                CRASHED_THEN_ON["count"] += 1
        ended = {r: name for r, name in now.items() if name in ("Failed", "Cancelled", "TimedOut")
                 or (name == "Crashed" and time.monotonic() - crashed_since[r] > 90)}
        if ended or time.monotonic() - started > timeout:
            counts: dict[str, int] = {}
            for name in now.values():
                counts[name] = counts.get(name, 0) + 1
            raise SystemExit(f"not all {len(run_ids)} runs reached {state} (after {time.monotonic() - started:.0f}s): "
                             f"{counts}; ended otherwise: {ended}")
        time.sleep(2)


def first_line_latency(serve: ServeProcess, group: str, started: list[str]) -> float:
    from mq_runbooks.kit import journal

    sent = dt.datetime.now(dt.timezone.utc)
    run_id = post(serve, group)
    started.append(run_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entries = journal.read(run_id)
        if entries:
            return (entries[0].at - sent).total_seconds()
        time.sleep(0.1)
    raise SystemExit(f"probe run {run_id} wrote nothing within 120s")


def approval_latency(settings, catalog, run_id: str) -> float:
    from mq_runbooks.app import runs
    from mq_runbooks.kit import journal

    runs.answer_gate(settings, catalog, run_id, True, "bob", "bench")
    answered = dt.datetime.now(dt.timezone.utc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        action = journal.last(journal.read(run_id), "action")
        if action is not None:
            return (action.at - answered).total_seconds()
        time.sleep(0.05)
    raise SystemExit(f"approved run {run_id} applied nothing within 120s")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def starter_rss_mb(serve_pid: int) -> float:
    """RSS of serve's preloaded starter (the forkserver it started)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == serve_pid and b"forkserver" in _cmdline(int(stat.parent.name)):
                total += rss_mb(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return total


def executors(serve_pid: int) -> tuple[int, float]:
    """Processes executing runs started by this serve (children of its preloaded starter, a
    multiprocessing forkserver, or executors with an interpreter of their own): count, total RSS."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    starters = {pid for pid, parent in parents.items() if parent == serve_pid and b"forkserver" in _cmdline(pid)}
    found = {pid for pid, parent in parents.items()
             if parent in starters or (parent == serve_pid and b"mq_runbooks.app.executor" in _cmdline(pid))}
    rss_kb = 0
    for pid in found:
        try:
            rss_kb += int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])
        except (OSError, IndexError):
            pass
    return len(found), rss_kb / 1024


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[0, 50, 200])
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--limit", type=int, default=10, help="serve --limit (runs executing at once)")
    args = parser.parse_args()
    from mq_runbooks.base.settings import Settings

    Settings.from_environ().apply_to_prefect()
    config = load_clusters(REPO / "clusters.yaml").kafka_cluster("primary").client_config()
    topic = topic_of_two(config, f"bench-wait-{uuid.uuid4().hex[:8]}")

    workdir = Path(tempfile.mkdtemp(prefix="bench-wait-"))
    env = serve_environment(workdir, timeout="2h")
    serve = ServeProcess(workdir, env)
    from mq_runbooks.base.catalog import load_catalog

    settings = Settings.from_environ()
    catalog = load_catalog(Path(env["RUNBOOK_CATALOG"]))
    rows, waiting_ids, approved_ids = [], [], []
    try:
        for target in sorted(args.waiting):
            more = target - len(waiting_ids)
            if more > 0:
                started = time.monotonic()
                waiting_ids += [post(serve, group) for group in make_groups(config, topic, more)]
                wait_all(waiting_ids, "Suspended", timeout=60 * 30)
                print(f"{target} runs waiting ({more} new in {time.monotonic() - started:.0f}s)", flush=True)
            count, executor_rss = executors(serve.process.pid)
            reference = import_prefect_median_s()
            probe_ids: list[str] = []
            latencies = [first_line_latency(serve, group, probe_ids) for group in make_groups(config, topic, args.probes)]
            wait_all(probe_ids, "Suspended", timeout=60 * 10)
            approvals = [approval_latency(settings, catalog, run_id) for run_id in probe_ids]
            approved_ids += probe_ids
            rows.append({"waiting": target, "executor_processes": count, "executor_rss_mb": round(executor_rss, 1),
                         "serve_rss_mb": round(rss_mb(serve.process.pid), 1),
                         "starter_rss_mb": round(starter_rss_mb(serve.process.pid), 1),
                         "import_prefect_s": round(reference, 2),
                         "start_p50_s": round(statistics.median(latencies), 2),
                         "start_max_s": round(max(latencies), 2),
                         "approval_p50_s": round(statistics.median(approvals), 2),
                         "approval_p90_s": round(percentile(approvals, 0.9), 2),
                         "approval_max_s": round(max(approvals), 2)})
            print(json.dumps(rows[-1]), flush=True)
        started = time.monotonic()
        from mq_runbooks.app import runs

        for run_id in waiting_ids:
            runs.answer_gate(settings, catalog, run_id, True, "bob", "bench")
        # The alert replays the last 15 minutes (by_duration): a run that waited longer finds its plan
        # moved and asks again (as it must); those are approved again until every run has completed.
        while True:
            now = states(waiting_ids + approved_ids)
            if all(name == "Completed" for name in now.values()):
                break
            again = [r for r, name in now.items() if name == "Suspended"]
            for run_id in again:
                runs.answer_gate(settings, catalog, run_id, True, "bob", "bench: the plan moved; approved again")
            ASKED_AGAIN["count"] += len(again)
            if time.monotonic() - started > 60 * 60:
                raise SystemExit(f"not all runs completed within an hour: {now}")
            time.sleep(5)
        approve_all_s = time.monotonic() - started
    finally:
        serve.stop()
    write_results(rows, len(waiting_ids), len(approved_ids), approve_all_s, args.limit)


def write_results(rows: list[dict], waited: int, probes: int, approve_all_s: float, limit: int) -> None:
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = [f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC (load {' '.join(load)}; serve --limit {limit})\n",
             "| runs waiting | executor processes (RSS) | serve RSS (its starter's) | fresh `import prefect` | new alert -> first line p50 (max) "
             "| ratio to the import | approval -> change applied p50 / p90 / max |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['waiting']} | {row['executor_processes']} ({row['executor_rss_mb']} MB) | "
                     f"{row['serve_rss_mb']} MB ({row['starter_rss_mb']} MB) | {row['import_prefect_s']} s | {row['start_p50_s']} s ({row['start_max_s']} s) | "
                     f"{row['start_p50_s'] / row['import_prefect_s']:.2f}x | "
                     f"{row['approval_p50_s']} / {row['approval_p90_s']} / {row['approval_max_s']} s |")
    lines.append(f"\nThe {waited} waiting runs approved together, then all of them and the {probes} probes "
                 f"Completed within {approve_all_s:.0f} s. {RESENT['count']} notifications were answered 503 "
                 "(the Prefect server busy: nothing started) and sent again, as Alertmanager does; "
                 f"{CRASHED_THEN_ON['count']} runs were seen Crashed and went on (made due again by serve when "
                 "they never started, or put back at their gate when they were already suspended there); "
                 f"{ASKED_AGAIN['count']} answers were to runs whose plan moved while they waited (the alert replays "
                 "the last 15 minutes) and that asked again.\n")
    results = REPO / "bench" / "results" / "waiting_runs.md"
    if not results.exists():
        results.write_text("# Runs waiting at their gates (bench/waiting_runs.py)\n")
    with results.open("a") as out:
        out.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
