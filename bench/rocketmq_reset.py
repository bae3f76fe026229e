"""Benchmark: a plan and a reset of a RocketMQ group with 64 queues, the engine vs. `mqadmin`.

    .venv/bin/python bench/rocketmq_reset.py [--runs N]     (default 5; needs dev/stack up rocketmq-namesrv
                                                           rocketmq-broker rocketmq-proxy)

Setup (once, idempotent): topic bench-rocketmq-64 with 64 queues and 20 messages in each, the group
bench-rocketmq-group (no consumer online) with offsets on all 64 queues.

Each round picks a time, alternating "before every message" (reset to the start) and "now" (to the
end); before each timed variant the group's offsets are moved (untimed) to the other end, so every
timed run changes all 64 offsets, and after it they are read back (untimed) and must be the
expected ones, or the benchmark stops. The order of the variants rotates per round.

Variants (wall time):
  engine, fresh process   `python -c`: the runbook's compute_plan (flows/rocketmq_reset_plan.py, no Prefect) (route, offsets, the offset of the
                          time on each queue) + update_offsets (64 per-queue resets, INVOKE_BROKER_TO_RESET_OFFSET as mqadmin sends) + the
                          read-back verify does; interpreter start and imports included.
  engine plan, in process compute_plan alone (what `runbook plan` waits for once imported): must be <= 2 s.
  mqadmin resetOffsetByTime -s <ms>   RocketMQ's own tool (a JVM; no consumer online, so it falls
                          back to the offset updates its old command sends).
  mqadmin consumerProgress            the read an operator plans with (a JVM).

Writes bench/results/rocketmq_reset.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from mq_runbooks.flows.rocketmq_reset_params import ResetOffsetParameters  # noqa: E402
from mq_runbooks.flows.rocketmq_reset_plan import compute_plan  # noqa: E402
from mq_runbooks.integrations.rocketmq import RocketMQAdmin  # noqa: E402

TOPIC, GROUP, QUEUES, PER_QUEUE = "bench-rocketmq-64", "bench-rocketmq-group", 64, 20
CLUSTER = load_clusters(ROOT / "clusters.yaml").rocketmq_cluster("primary")

ENGINE = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from mq_runbooks.base.clusters import load_clusters
from mq_runbooks.flows.rocketmq_reset_plan import compute_plan, update_offsets
from mq_runbooks.flows.rocketmq_reset_params import ResetOffsetParameters
from mq_runbooks.integrations.rocketmq import RocketMQAdmin
cluster = load_clusters(__import__('pathlib').Path({str(ROOT / 'clusters.yaml')!r})).rocketmq_cluster('primary')
params = ResetOffsetParameters(cluster='primary', group={GROUP!r}, topic=[{TOPIC!r}],
                               to_datetime=sys.argv[1])
with RocketMQAdmin.from_cluster(cluster) as admin:
    plan = compute_plan(admin, params, int(time.time() * 1000))
update_offsets(cluster, {GROUP!r}, plan.target_offsets())
with RocketMQAdmin.from_cluster(cluster) as admin:
    assert all(admin.consumer_offset({GROUP!r}, *q.key) == q.target_offset for q in plan.queues)
"""


def setup() -> None:
    with RocketMQAdmin.from_cluster(CLUSTER) as admin:
        if not admin.topic_exists(TOPIC) or len(admin.queues(TOPIC)) != QUEUES:
            admin.create_topic(TOPIC, QUEUES)
            time.sleep(2)
        admin.create_group(GROUP)
        admin.create_topic(f"%RETRY%{GROUP}", 1)
        for broker, queue in admin.queues(TOPIC):
            for n in range(admin.max_offset(TOPIC, broker, queue), PER_QUEUE):
                admin.send(TOPIC, b"x" * 100, {"KEYS": f"k{queue}-{n}"}, broker, queue)


def move_all(to_end: bool) -> None:
    with RocketMQAdmin.from_cluster(CLUSTER) as admin:
        for broker, queue in admin.queues(TOPIC):
            admin.reset_offset(GROUP, TOPIC, broker, queue, admin.max_offset(TOPIC, broker, queue) if to_end else 0)


def check(to_end: bool) -> None:
    with RocketMQAdmin.from_cluster(CLUSTER) as admin:
        for broker, queue in admin.queues(TOPIC):
            want = admin.max_offset(TOPIC, broker, queue) if to_end else 0
            got = admin.consumer_offset(GROUP, TOPIC, broker, queue)
            if got != want:
                sys.exit(f"queue {queue}: offset {got}, expected {want}: the variant did not reset")


def mqadmin(*args: str) -> list[str]:
    return [str(ROOT / "dev" / "stack"), "mqadmin", *args]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "Exception" in done.stdout + done.stderr:
        sys.exit(f"{command[:4]} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    setup()
    times: dict[str, list[float]] = {"engine": [], "mqadmin": [], "plan": [], "progress": []}
    python = str(ROOT / ".venv" / "bin" / "python")
    for round_number in range(args.runs):
        to_end = round_number % 2 == 1
        moment_ms = int(time.time() * 1000) if to_end else 0
        moment_iso = dt.datetime.fromtimestamp(moment_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        variants = [("engine", [python, "-c", ENGINE, moment_iso]),
                    ("mqadmin", mqadmin("resetOffsetByTime", "-g", GROUP, "-t", TOPIC, "-s", str(moment_ms)))]
        for name, command in variants[round_number % 2:] + variants[:round_number % 2]:
            move_all(not to_end)
            times[name].append(timed(command))
            check(to_end)
        params = ResetOffsetParameters(cluster="primary", group=GROUP, topic=[TOPIC], to_earliest=True)
        started = time.perf_counter()
        with RocketMQAdmin.from_cluster(CLUSTER) as admin:
            assert len(compute_plan(admin, params, int(time.time() * 1000)).queues) == QUEUES
        times["plan"].append(time.perf_counter() - started)
        times["progress"].append(timed(mqadmin("consumerProgress", "-g", GROUP)))
        print(f"round {round_number + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items()), flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    ratio = median["engine"] / median["mqadmin"]
    load = os.getloadavg()
    report = f"""# RocketMQ: plan and reset of a group with 64 queues, the engine vs. mqadmin

`bench/rocketmq_reset.py --runs {args.runs}`, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()},
{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared machine). Medians of {args.runs};
each timed run changed all 64 offsets and was read back.

| variant | median | runs |
|---|---|---|
| engine, fresh process: plan + reset + read-back | {median['engine']:.3f} s | {', '.join(f'{t:.2f}' for t in times['engine'])} |
| `mqadmin resetOffsetByTime` | {median['mqadmin']:.3f} s | {', '.join(f'{t:.2f}' for t in times['mqadmin'])} |
| engine plan, in process (`compute_plan`) | {median['plan']:.3f} s | {', '.join(f'{t:.3f}' for t in times['plan'])} |
| `mqadmin consumerProgress` | {median['progress']:.3f} s | {', '.join(f'{t:.2f}' for t in times['progress'])} |

Engine / mqadmin resetOffsetByTime: **{ratio:.2f}x** (target <= 0.5x). Plan in process: {median['plan']:.3f} s (target <= 2 s).
"""
    (ROOT / "bench" / "results" / "rocketmq_reset.md").write_text(report)
    print(report)
    return 0 if ratio <= 0.5 and median["plan"] <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
