"""Benchmark: RabbitMQ backlog move rate (messages/s) of the rabbitmq-failover runbook's shovel move
against the same move made by hand with one dynamic shovel, in the same run on the same nodes.

    .venv/bin/python bench/rabbitmq_failover.py [--messages 20000] [--rounds 5] [--clusters clusters.yaml]

Both are timed end to end, from the request that starts the move to the moment the move is known
to be complete: the runbook's `move_backlog` step (counts before, shovel with on-confirm acks and
delete-after queue-length, waits until it deleted itself, looking every rabbitmq_shovels.POLL_S
seconds, counts after); by hand, what an operator would do with curl: PUT the shovel parameter (same
options), poll GET /api/shovels/{vhost} every 0.25 s until it is gone. Rounds alternate between the
two; each round moves a fresh backlog of persistent messages.
Defaults to the local stack's primary and standby (`clusters.yaml`); the vhost is created and removed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from mq_runbooks.flows import rabbitmq_failover  # noqa: E402
from mq_runbooks.flows.rabbitmq_failover import move_backlog  # noqa: E402
from mq_runbooks.flows.rabbitmq_failover_plan import MovePlan, QueueBacklog, RabbitFailoverParameters  # noqa: E402
from mq_runbooks.integrations.rabbitmq import RabbitManagement  # noqa: E402
from mq_runbooks.integrations.rabbitmq_amqp import vhost_uri  # noqa: E402
from mq_runbooks.integrations.rabbitmq_shovels import PREFETCH, local_uri, queue_depth  # noqa: E402


def fill(amqp_url: str, vhost: str, queue: str, count: int) -> None:
    """Publish `count` persistent 200-byte messages, then wait until the queue holds them all."""
    connection = pika.BlockingConnection(pika.URLParameters(vhost_uri(amqp_url, vhost)))
    channel = connection.channel()
    body = b"x" * 200
    for i in range(count):
        channel.basic_publish("", queue, body, pika.BasicProperties(message_id=str(i), delivery_mode=2))
    connection.close()
    while queue_depth(amqp_url, vhost, queue) < count:
        time.sleep(0.05)


def purge(amqp_url: str, vhost: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(vhost_uri(amqp_url, vhost)))
    connection.channel().queue_purge(queue)
    connection.close()


COUNTING: list[tuple[int, float]] = []  # per runbook move: queue_depth calls, seconds spent in them


def timed_counts(count_depth):
    """queue_depth as move_backlog calls it, adding each call's time to the current move's entry."""
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return count_depth(*args, **kwargs)
        finally:
            calls, seconds = COUNTING[-1]
            COUNTING[-1] = (calls + 1, seconds + time.perf_counter() - began)
    return wrapper


def by_runbook(source, destination, vhost: str, queue: str, count: int) -> float:
    plan = MovePlan("failover", source.name, destination.name, vhost, True, None, (), (QueueBacklog(queue, count),),
                    "bench", "old", "new")
    params = RabbitFailoverParameters(cluster=source.name, standby=destination.name, vhost=vhost, switch="bench")
    COUNTING.append((0, 0.0))
    started = time.perf_counter()
    rows = move_backlog(source, destination, plan, params, uuid.uuid4().hex)
    elapsed = time.perf_counter() - started
    # all arrived, none twice (the destination was empty), none left behind
    assert rows[0]["moved"] == count and rows[0]["left_on_source"] == 0 and rows[0]["outcome"] == "done", rows
    return elapsed


def by_hand(source, destination, vhost: str, queue: str, count: int) -> float:
    user, password = destination.management_credentials()
    name = f"by-hand-{uuid.uuid4().hex[:8]}"
    value = {"src-protocol": "amqp091", "src-uri": vhost_uri(source.amqp_url.get_secret_value(), vhost),
             "src-queue": queue, "dest-protocol": "amqp091", "dest-uri": local_uri(vhost), "dest-queue": queue,
             "src-delete-after": "queue-length", "ack-mode": "on-confirm", "src-prefetch-count": PREFETCH}
    with httpx.Client(base_url=destination.management_url, auth=(user, password)) as http:
        started = time.perf_counter()
        http.put(f"/api/parameters/shovel/{quote(vhost, safe='')}/{name}", json={"value": value}).raise_for_status()
        while True:
            listed = http.get(f"/api/shovels/{quote(vhost, safe='')}").json()
            if not any(s["name"] == name for s in listed) and http.get(
                    f"/api/parameters/shovel/{quote(vhost, safe='')}/{name}").status_code == 404:
                break
            time.sleep(0.25)
        elapsed = time.perf_counter() - started
    assert queue_depth(destination.amqp_url.get_secret_value(), vhost, queue) == count
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clusters", type=Path, default=Path(__file__).resolve().parents[1] / "clusters.yaml")
    args = parser.parse_args()
    rabbitmq_failover.queue_depth = timed_counts(rabbitmq_failover.queue_depth)
    clusters = load_clusters(args.clusters)
    source, destination = clusters.rabbit_cluster("primary"), clusters.rabbit_cluster("standby")
    vhost, queue = f"bench-{uuid.uuid4().hex[:6]}", "backlog"
    apis = [RabbitManagement.from_cluster(c) for c in (source, destination)]
    for api in apis:
        api.send("PUT", f"/api/vhosts/{vhost}")
        api.send("PUT", f"/api/permissions/{vhost}/{source.management_credentials()[0]}",
                 {"configure": ".*", "write": ".*", "read": ".*"})
        api.send("PUT", f"/api/queues/{vhost}/{queue}", {"durable": True})
    times: dict[str, list[float]] = {"runbook": [], "by hand": []}
    try:
        for round_ in range(args.rounds):
            for label, move in (("runbook", by_runbook), ("by hand", by_hand))[:: 1 if round_ % 2 == 0 else -1]:
                fill(source.amqp_url.get_secret_value(), vhost, queue, args.messages)
                times[label].append(move(source, destination, vhost, queue, args.messages))
                purge(destination.amqp_url.get_secret_value(), vhost, queue)
                print(f"round {round_ + 1} {label}: {times[label][-1]:.2f}s", flush=True)
    finally:
        for api in apis:
            api.send("DELETE", f"/api/vhosts/{vhost}")
            api.close()
    medians = {label: statistics.median(values) for label, values in times.items()}
    print(f"\n{args.messages} messages, {args.rounds} rounds each (median):")
    for label, median in medians.items():
        print(f"  {label:8s} {median:6.2f} s  {args.messages / median:8.0f} msg/s   all: "
              + ", ".join(f"{t:.2f}" for t in times[label]))
    print(f"  runbook / by hand rate: {medians['by hand'] / medians['runbook']:.2f}; median of the per-round ratios "
          f"{statistics.median(h / r for r, h in zip(times['runbook'], times['by hand'])):.2f}")
    print(f"  runbook's counting (queue_depth) per move: median {statistics.median(c for c, _ in COUNTING):.0f} calls, "
          f"{statistics.median(s for _, s in COUNTING):.3f} s; all: " + ", ".join(f"{s:.3f}" for _, s in COUNTING))
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
