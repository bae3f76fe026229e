"""Benchmark of the alert path of `runbook serve`, on the local stack.

1. latency: alert POST -> the flow's first line, over N alerts sent one after another. The flow
   runs for real (forked by serve's worker from its preloaded starter); each alert names a group
   that has no committed offsets, so the run starts, records its parameters (its first journal
   line) and fails at planning, freeing its slot. Reported: p50 / p99 / max of
   (Prefect's Running state start - POST) and (first journal entry - POST), and each p50's ratio to
   a fresh `python -c "import prefect"` measured in the same run.
2. burst: M notifications over D distinct alerts (each repeated M/D times, shuffled), sent by C
   concurrent keep-alive clients (a plain HTTP/1.1 client: httpx would cost more CPU than the
   server measured) in four scenarios, each --repeats times (medians):
   - reference: a bare FastAPI handler answering 202 (the ceiling of the web stack on this machine),
   - one `serve --no-runner` replica, two replicas (requests alternate, like a load balancer),
   - two replicas, one killed (SIGKILL) at 30% of the burst and started again; a request that got no
     answer, or a 503 (nothing recorded), is sent again to a live replica, as Alertmanager retries.
   Reported: accepted per second, runs created in Prefect for the burst's alerts (must be exactly D),
   notifications never acknowledged (must be 0), and how many were sent again; and where the CPU
   went during each burst (from /proc): this client, the replicas, the Prefect server, its
   PostgreSQL (--database-port), and the rest of the machine (other sessions share its 2 cores).

    .venv/bin/python bench/alerts.py --prefect-url http://127.0.0.1:4200/api --label sqlite
    STACK_DIR=/tmp/stack-pg STACK_PREFECT_DB=postgres STACK_PREFECT_PORT=4460 STACK_POSTGRES_PORT=5463 \
        dev/stack up postgres prefect         (a second Prefect: never restart the shared one)
    .venv/bin/python bench/alerts.py --prefect-url http://127.0.0.1:4460/api --label postgres --latency-alerts 0 \
        --database-port 5463
    .venv/bin/python bench/alerts.py --repeats 0            (the latency part alone)

Results are appended to bench/results/alerts.md.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.serve_harness import ALERT_TOKEN, ServeProcess, serve_environment  # noqa: E402

from cpu_usage import CpuSplit, listener_pids, tree_cpu  # noqa: E402  (bench/ is this script's folder)
from reference import import_prefect_median_s  # noqa: E402

AUTH = {"Authorization": f"Bearer {ALERT_TOKEN}", "Content-Type": "application/json"}
REQUEST_HEAD = ("POST /alerts/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {ALERT_TOKEN}\r\nContent-Length: %d\r\n\r\n").encode()


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
    reference = import_prefect_median_s()
    return {name: {"p50": statistics.median(values), "p99": percentile(values, 0.99), "max": max(values),
                   "min": min(values), "import_prefect_s": reference}
            for name, values in (("post_to_running", to_running), ("post_to_first_journal_line", to_first_line))}


class Replicas:
    """The `serve --no-runner` replicas a burst is spread over, like a load balancer: each request goes
    to the next live replica; a replica being restarted takes none until it answers again."""

    def __init__(self, start: Callable[[], ServeProcess], count: int, cpu: CpuSplit | None = None) -> None:
        self.start = start
        self.cpu = cpu
        self.live: list[ServeProcess] = [start() for _ in range(count)]
        self._next = 0

    def pick(self) -> ServeProcess:
        self._next += 1
        return self.live[self._next % len(self.live)]

    async def restart(self, index: int) -> float:
        """Kill replica `index` (SIGKILL: requests in flight there get no answer) and start it again;
        returns the seconds it was away."""
        victim = self.live.pop(index)
        began = time.monotonic()
        if self.cpu is not None:
            self.cpu.replicas_gone += tree_cpu([victim.process.pid])
        victim.process.kill()
        victim.process.wait()
        victim._log.close()
        fresh = await asyncio.to_thread(self.start)
        self.live.insert(index, fresh)
        return time.monotonic() - began

    def stop(self) -> None:
        for replica in self.live:
            replica.stop()


async def post(streams: dict, replica: ServeProcess, body: bytes) -> tuple[int, dict]:
    """One POST over a kept-alive connection to `replica` (a plain HTTP/1.1 client: httpx would cost
    this 2-core machine more CPU than the server being measured)."""
    if replica.port not in streams:
        streams[replica.port] = await asyncio.open_connection("127.0.0.1", replica.port)
    reader, writer = streams[replica.port]
    try:
        writer.write(REQUEST_HEAD % len(body) + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        answer = await reader.readexactly(length)
    except BaseException:
        del streams[replica.port]
        writer.close()
        raise
    return status, (json.loads(answer) if status == 202 else {})


async def burst(replicas: Replicas, notifications: int, distinct: int, clients: int,
                restart_at: float | None = None) -> dict:
    """`notifications` over `distinct` alerts, shuffled, by `clients` concurrent clients. A request whose
    connection fails (its replica died) is sent again to another replica, as Alertmanager would retry."""
    bench_id = uuid.uuid4().hex[:8]
    starts = dt.datetime.now(dt.timezone.utc).isoformat()
    bodies = [payload(f"bench-burst-{bench_id}-{i}", f"{bench_id}{i:04d}", starts) for i in range(distinct)]
    queue = [bodies[i % distinct] for i in range(notifications)]
    random.shuffle(queue)
    statuses: dict[int, int] = {}
    run_ids: set[str] = set()
    sent = [0]
    retried = [0]
    restart_task: list[asyncio.Task] = []

    async def worker(items: list[bytes]) -> None:
        streams: dict = {}
        for body in items:
            while True:
                replica = replicas.pick()
                try:
                    status, result = await post(streams, replica, body)
                except (OSError, asyncio.IncompleteReadError):
                    retried[0] += 1
                    await asyncio.sleep(0.01)
                    continue
                if status >= 500:  # not acknowledged: Alertmanager sends it again
                    retried[0] += 1
                    continue
                break
            statuses[status] = statuses.get(status, 0) + 1
            if status == 202:
                run_ids.update(item["run_id"] for item in result["started"] + result["deduplicated"])
            sent[0] += 1
            if restart_at is not None and not restart_task and sent[0] >= restart_at * notifications:
                restart_task.append(asyncio.create_task(replicas.restart(0)))
        for _, writer in streams.values():
            writer.close()

    cpu_before = replicas.cpu.snapshot(replicas.live) if replicas.cpu else None
    began = time.monotonic()
    await asyncio.gather(*(worker(queue[i::clients]) for i in range(clients)))
    elapsed = time.monotonic() - began
    cpu = None
    if cpu_before is not None:
        cpu_after = replicas.cpu.snapshot(replicas.live)
        cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
        cpu["others"] = cpu["machine"] - sum(v for name, v in cpu.items() if name != "machine")
    away = await restart_task[0] if restart_task else None
    return {"notifications": notifications, "distinct_alerts": distinct, "clients": clients,
            "replicas": len(replicas.live), "restarted": restart_task != [], "away_s": away,
            "seconds": elapsed, "accepted_per_second": statuses.get(202, 0) / elapsed,
            "distinct_run_ids": len(run_ids), "lost": notifications - statuses.get(202, 0),
            "retried": retried[0], "statuses": statuses, "bench_id": bench_id, "cpu": cpu}


async def runs_of_deployment(deployment: str) -> list:
    """Every flow run of the bench's deployment (one per catalog runbook, all bench-only)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async with get_client() as client:
        found, offset = [], 0
        while True:
            page = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                limit=200, offset=offset)
            found += page
            offset += len(page)
            if len(page) < 200:
                return found


async def delete_runs(runs: list) -> None:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        for run in runs:
            await client.delete_flow_run(run.id)


# The reference: the same web stack (FastAPI on uvicorn, one process) answering 202 with an empty
# routing result without reading the alert: the ceiling of the HTTP path on this machine.
PLAIN_SERVER = ("import sys, uvicorn\nfrom fastapi import FastAPI\nfrom fastapi.responses import JSONResponse\n"
                "app = FastAPI()\n@app.post('/alerts/alertmanager')\nasync def alerts():\n"
                "    return JSONResponse({'started': [], 'deduplicated': []}, status_code=202)\n"
                "@app.get('/healthz')\nasync def healthz():\n    return {}\n"
                "uvicorn.run(app, port=int(sys.argv[1]), log_level='warning')\n")


def plain_server(workdir: Path) -> ServeProcess:
    return ServeProcess(workdir, dict(os.environ), command=lambda port: [sys.executable, "-c", PLAIN_SERVER, str(port)])


SCENARIOS = {
    "reference: empty FastAPI handler, 1 process": dict(replicas=1, restart_at=None, plain=True),
    "1 replica": dict(replicas=1, restart_at=None, plain=False),
    "2 replicas": dict(replicas=2, restart_at=None, plain=False),
    "2 replicas, one killed and restarted at 30%": dict(replicas=2, restart_at=0.3, plain=False),
}


def baseline_serve(workdir: Path, env: dict[str, str], runbook: Path) -> ServeProcess:
    """A `serve --no-runner` replica of another checkout of the project (its virtualenv's `runbook`)."""
    return ServeProcess(workdir, env, command=lambda port: [str(runbook), "serve", "--port", str(port), "--no-runner"])


def baseline_commit(runbook: Path) -> str:
    """The commit the baseline's checkout (<checkout>/.venv/bin/runbook) is at."""
    import subprocess

    checkout = runbook.resolve().parent.parent.parent
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() or str(checkout)


async def run_scenario(workdir: Path, env: dict[str, str], scenario: dict, args, cpu: CpuSplit) -> dict:
    if scenario["plain"]:
        start = lambda: plain_server(workdir)  # noqa: E731
    elif scenario.get("baseline"):
        start = lambda: baseline_serve(workdir, env, args.baseline)  # noqa: E731
    else:
        start = lambda: ServeProcess(workdir, env, runner=False)  # noqa: E731
    cpu.replicas_gone = 0.0
    replicas = Replicas(start, scenario["replicas"], cpu)
    try:
        result = await burst(replicas, args.notifications, args.distinct, args.clients, scenario["restart_at"])
    finally:
        replicas.stop()
    if not scenario["plain"]:
        runs = await runs_of_deployment(env["RUNBOOK_DEPLOYMENT"])
        prefix = f"bench-burst-{result['bench_id']}-"
        result["runs_created"] = sum(run.parameters["params"]["group"].startswith(prefix) for run in runs)
        await delete_runs(runs)
    return result


def burst_report(results: dict[str, list[dict]], args, cpu: CpuSplit) -> list[str]:
    """The burst's part of the results: accepted/s per scenario, and where the CPU went."""
    lines: list[str] = []
    reference = statistics.median(r["accepted_per_second"] for r in next(iter(results.values())))
    lines += [f"- burst: {args.notifications} notifications over {args.distinct} alerts (shuffled), "
              f"{args.clients} concurrent keep-alive clients, `serve --no-runner` replicas, "
              f"{args.repeats} rounds; runs created and lost are per round (target: exactly "
              f"{args.distinct} runs, 0 lost; a request that got no answer is sent again, as Alertmanager does)",
              "", "| scenario | median accepted/s | min | max | ratio to reference | runs created | lost | resent |",
              "|---|---:|---:|---:|---:|---|---|---|"]
    for name, rounds in results.items():
        rates = [r["accepted_per_second"] for r in rounds]
        created = ", ".join(str(r.get("runs_created", "-")) for r in rounds)
        lines.append(f"| {name} | **{statistics.median(rates):.0f}** | {min(rates):.0f} | {max(rates):.0f} | "
                     f"{statistics.median(rates) / reference:.2f}x | {created} | "
                     f"{', '.join(str(r['lost']) for r in rounds)} | {', '.join(str(r['retried']) for r in rounds)} |")
    lines += ["", f"CPU of the burst (median seconds over the rounds; the machine has {os.cpu_count()} cores, so "
              f"it can give at most {os.cpu_count()} CPU-seconds per second of burst; prefect and database are "
              f"{'found' if cpu.prefect_pids else 'NOT found (not our processes)'} / "
              f"{'counted' if cpu.database_pids else 'not counted (SQLite: inside the Prefect server)'}; "
              "others = the rest of the machine, e.g. other sessions' tests):", "",
              "| scenario | burst s | client | replicas | prefect | database | others | machine busy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, rounds in results.items():
        def med(key: str) -> float:
            return statistics.median(r["cpu"][key] for r in rounds)
        lines.append(f"| {name} | {statistics.median(r['seconds'] for r in rounds):.2f} | " + " | ".join(
            f"{med(key):.2f}" for key in ("client", "replicas", "prefect", "database", "others", "machine")) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefect-url", default="http://127.0.0.1:4200/api")
    parser.add_argument("--label", default="sqlite", help="what the Prefect server runs on, for the report")
    parser.add_argument("--latency-alerts", type=int, default=50, help="0 measures the burst only")
    parser.add_argument("--notifications", type=int, default=5000)
    parser.add_argument("--distinct", type=int, default=100)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every burst scenario (medians)")
    parser.add_argument("--scenarios", help="comma-separated numbers (1-4) of the burst scenarios to run "
                        "(default: all; the reference, 1, is always run)")
    parser.add_argument("--baseline", type=Path, help="the `runbook` of another checkout's virtualenv (e.g. "
                        "main's): scenarios 2-4 are run with its replicas too, in the same rounds")
    parser.add_argument("--database-port", type=int, help="the port of the Prefect server's PostgreSQL, to count "
                        "its CPU (the Prefect server's own is found from --prefect-url)")
    args = parser.parse_args()
    prefect_port = urlsplit(args.prefect_url).port or 80
    cpu = CpuSplit(listener_pids(prefect_port), listener_pids(args.database_port) if args.database_port else [])
    os.environ["PREFECT_API_URL"] = args.prefect_url
    workdir = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    env = {**serve_environment(workdir), "PREFECT_API_URL": args.prefect_url}

    serve = ServeProcess(workdir, env, runner=True)  # registers the deployments the replicas start runs of
    try:
        lat = latency(serve, args.latency_alerts) if args.latency_alerts else None
    finally:
        serve.stop()
    chosen = {1} | {int(n) for n in args.scenarios.split(",")} if args.scenarios else set(range(1, len(SCENARIOS) + 1))
    scenarios = {}
    for n, (name, scenario) in enumerate(SCENARIOS.items(), 1):
        if n in chosen:
            scenarios[name] = scenario
            if args.baseline and not scenario["plain"]:  # each right after its own, so both see the same load
                scenarios[f"baseline {baseline_commit(args.baseline)}: {name}"] = {**scenario, "baseline": True}
    results: dict[str, list[dict]] = {name: [] for name in scenarios}
    for round_number in range(args.repeats):
        for name, scenario in scenarios.items():
            result = asyncio.run(run_scenario(workdir, env, scenario, args, cpu))
            results[name].append(result)
            print(f"round {round_number + 1}: {name}: {result['accepted_per_second']:.0f}/s, "
                  f"runs {result.get('runs_created', '-')}, lost {result['lost']}, retried {result['retried']}",
                  flush=True)
            print(f"  cpu seconds: {json.dumps({k: round(v, 2) for k, v in result['cpu'].items()})} "
                  f"over {result['seconds']:.2f} s", flush=True)

    lines = [f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, Prefect on {args.label}",
             f"- machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end"]
    if lat:
        lines.append(f"- alert -> flow, {args.latency_alerts} alerts one after another (seconds):")
        for name, values in lat.items():
            lines.append(f"  - {name}: p50 {values['p50']:.2f}, p99 {values['p99']:.2f}, "
                         f"min {values['min']:.2f}, max {values['max']:.2f}; p50 / a fresh `import prefect` "
                         f"({values['import_prefect_s']:.2f} s, median of 3 after the alerts) = "
                         f"{values['p50'] / values['import_prefect_s']:.2f}x")
    if results and args.repeats:
        lines += burst_report(results, args, cpu)
    text = "\n".join(lines) + "\n"
    print(text)
    results_file = REPO / "bench" / "results" / "alerts.md"
    if not results_file.exists():
        results_file.write_text("# Alert path of `runbook serve`\n\nWritten by bench/alerts.py (see its docstring).\n")
    with open(results_file, "a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
