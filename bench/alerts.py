"""Benchmark of the alert path of `runbook serve`, on the local stack.

1. latency: alert POST -> the flow's first line, over N alerts sent one after another. The flow
   runs for real (runner in `serve`, PREFECT_RUNNER_POLL_FREQUENCY=1); each alert names a group
   that has no committed offsets, so the run starts, records its parameters (its first journal
   line) and fails at planning, freeing its slot. Reported: p50 / p99 / max of
   (Prefect's Running state start - POST) and (first journal entry - POST).
2. burst: M notifications over D distinct alerts (each repeated M/D times, shuffled), sent by C
   concurrent clients to a `serve --no-runner` process: accepted per second, runs created (must be
   exactly D) and notifications lost (answers other than 202, must be 0).

    .venv/bin/python bench/alerts.py --prefect-url http://127.0.0.1:4200/api --label sqlite
    STACK_DIR=.stack-pg STACK_PREFECT_DB=postgres STACK_PREFECT_PORT=4400 dev/stack up postgres prefect
    .venv/bin/python bench/alerts.py --prefect-url http://127.0.0.1:4400/api --label postgres

Results are appended to bench/results/alerts.md.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.serve_harness import ALERT_TOKEN, ServeProcess, serve_environment  # noqa: E402

AUTH = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}


def payload(group: str, fingerprint: str, starts: str) -> bytes:
    labels = {"alertname": "KafkaConsumerGroupStuck", "severity": "page", "cluster": "primary",
              "consumergroup": group}
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "bench", "groupLabels": {}, "commonLabels": labels,
        "commonAnnotations": {}, "externalURL": "", "groupKey": "bench", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": labels, "annotations": {}, "startsAt": starts,
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint}],
    }).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def latency(serve: ServeProcess, count: int) -> dict:
    from prefect.client.orchestration import get_client

    from mq_runbooks.kit import journal

    to_running, to_first_line = [], []
    with get_client(sync_client=True) as client:
        for i in range(count):
            group = f"bench-latency-{uuid.uuid4().hex[:8]}"
            sent = dt.datetime.now(dt.timezone.utc)
            answer = httpx.post(f"{serve.url}/alerts/alertmanager", headers=AUTH, timeout=30,
                                content=payload(group, uuid.uuid4().hex[:16], sent.isoformat()))
            run_id = answer.json()["started"][0]["run_id"]
            deadline = time.monotonic() + 60
            first = None
            while time.monotonic() < deadline and first is None:
                entries = journal.read(run_id)
                first = entries[0] if entries else None
                if first is None:
                    time.sleep(0.05)
            if first is None:
                raise RuntimeError(f"run {run_id} wrote no journal line within 60 s")
            run = client.read_flow_run(uuid.UUID(run_id))
            to_first_line.append((first.at - sent).total_seconds())
            to_running.append((run.start_time - sent).total_seconds())
            while not client.read_flow_run(uuid.UUID(run_id)).state.is_final():
                time.sleep(0.2)
    return {name: {"p50": statistics.median(values), "p99": percentile(values, 0.99), "max": max(values),
                   "min": min(values)}
            for name, values in (("post_to_running", to_running), ("post_to_first_journal_line", to_first_line))}


async def burst(serve: ServeProcess, notifications: int, distinct: int, clients: int) -> dict:
    bench_id = uuid.uuid4().hex[:8]
    starts = dt.datetime.now(dt.timezone.utc).isoformat()
    bodies = [payload(f"bench-burst-{bench_id}-{i}", f"{bench_id}{i:04d}", starts) for i in range(distinct)]
    queue = [bodies[i % distinct] for i in range(notifications)]
    random.shuffle(queue)
    statuses: dict[int, int] = {}
    run_ids: set[str] = set()

    async def worker(items: list[bytes]) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            for body in items:
                try:
                    answer = await client.post(f"{serve.url}/alerts/alertmanager", headers=AUTH, content=body)
                except httpx.HTTPError:
                    statuses[-1] = statuses.get(-1, 0) + 1
                    continue
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 202:
                    result = answer.json()
                    run_ids.update(item["run_id"] for item in result["started"] + result["deduplicated"])

    began = time.monotonic()
    await asyncio.gather(*(worker(queue[i::clients]) for i in range(clients)))
    elapsed = time.monotonic() - began

    from prefect.client.orchestration import get_client

    async with get_client() as client:
        created = 0
        for run_id in run_ids:
            run = await client.read_flow_run(uuid.UUID(run_id))
            created += run.parameters["params"]["group"].startswith(f"bench-burst-{bench_id}-")
            await client.delete_flow_run(uuid.UUID(run_id))
    return {"notifications": notifications, "distinct_alerts": distinct, "clients": clients,
            "seconds": elapsed, "accepted_per_second": statuses.get(202, 0) / elapsed,
            "runs_created": created, "distinct_run_ids": len(run_ids),
            "lost": notifications - statuses.get(202, 0), "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefect-url", default="http://127.0.0.1:4200/api")
    parser.add_argument("--label", default="sqlite", help="what the Prefect server runs on, for the report")
    parser.add_argument("--latency-alerts", type=int, default=50)
    parser.add_argument("--notifications", type=int, default=5000)
    parser.add_argument("--distinct", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    os.environ["PREFECT_API_URL"] = args.prefect_url
    workdir = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    env = {**serve_environment(workdir), "PREFECT_API_URL": args.prefect_url}

    serve = ServeProcess(workdir, env, runner=True)
    try:
        lat = latency(serve, args.latency_alerts) if args.latency_alerts else None
    finally:
        serve.stop()
    replica = ServeProcess(workdir, env, runner=False)
    try:
        burst_result = asyncio.run(burst(replica, args.notifications, args.distinct, args.clients))
    finally:
        replica.stop()

    lines = [f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, Prefect on {args.label}",
             f"- machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end"]
    if lat:
        lines.append(f"- alert -> flow, {args.latency_alerts} alerts one after another (seconds):")
        for name, values in lat.items():
            lines.append(f"  - {name}: p50 {values['p50']:.2f}, p99 {values['p99']:.2f}, "
                         f"min {values['min']:.2f}, max {values['max']:.2f}")
    b = burst_result
    lines.append(f"- burst: {b['notifications']} notifications over {b['distinct_alerts']} alerts, "
                 f"{b['clients']} concurrent clients, `serve --no-runner`: {b['seconds']:.1f} s, "
                 f"**{b['accepted_per_second']:.0f} accepted/s**, runs created **{b['runs_created']}** "
                 f"(distinct run ids {b['distinct_run_ids']}), lost **{b['lost']}**, statuses {b['statuses']}")
    text = "\n".join(lines) + "\n"
    print(text)
    results = REPO / "bench" / "results" / "alerts.md"
    if not results.exists():
        results.write_text("# Alert path of `runbook serve`\n\nWritten by bench/alerts.py (see its docstring).\n")
    with open(results, "a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
