"""Benchmark: moving a backlog (default 100,000 messages of 1 KiB) to a parking queue on the primary
RabbitMQ of the local stack, with the engine's confirmed move (mq_runbooks.integrations.rabbitmq_moves) and with
a dynamic shovel set up by hand (PUT /api/parameters/shovel/..., ack-mode on-confirm,
src-delete-after queue-length), alternately in the same run. Every message id is counted in the
destination: lost and duplicated must both be 0.

    .venv/bin/python bench/rabbitmq_move.py [--messages 100000] [--rounds 1] [--out bench/results/rabbitmq_move.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pika

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from mq_runbooks.integrations.rabbitmq_amqp import open_amqp  # noqa: E402
from mq_runbooks.integrations.rabbitmq_moves import ensure_queue, move_messages  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BODY = b"x" * 1024


def fill(amqp_url: str, queue: str, count: int) -> list[str]:
    ids = [f"{queue}-{i}" for i in range(count)]
    connection = open_amqp(amqp_url, "/", "bench-fill")
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    for message_id in ids:
        properties = pika.BasicProperties(message_id=message_id, delivery_mode=2)
        channel.basic_publish("", queue, BODY, properties)
    connection.close()
    while depth(amqp_url, queue) < count:  # the backlog is all there before the clock starts
        time.sleep(0.2)
    return ids


def drain_ids(amqp_url: str, queue: str, expected: int) -> Counter:
    """The message ids in `queue` (consumed, then the queue is deleted)."""
    seen: Counter = Counter()
    connection = open_amqp(amqp_url, "/", "bench-count")
    channel = connection.channel()
    channel.basic_qos(prefetch_count=5000)
    for method, properties, _ in channel.consume(queue, auto_ack=True, inactivity_timeout=3):
        if method is None:
            break
        seen[properties.message_id] += 1
    channel.cancel()
    channel.queue_delete(queue)
    connection.close()
    return seen


def depth(amqp_url: str, queue: str) -> int:
    connection = open_amqp(amqp_url, "/", "bench-depth")
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def engine_move(amqp_url: str, source: str, destination: str, count: int) -> float:
    ensure_queue(amqp_url, "/", destination)
    report = move_messages(amqp_url, "/", source, destination, idle_s=1.0)
    if report.error or report.moved != count:
        raise SystemExit(f"engine move failed: {report}")
    return report.elapsed_s - 1.0  # the idle wait that proves the source is empty is not moving time


def shovel_move(http: httpx.Client, amqp_url: str, source: str, destination: str, count: int) -> float:
    ensure_queue(amqp_url, "/", destination)
    name = f"bench-{source}"
    started = time.monotonic()
    response = http.put(f"/api/parameters/shovel/%2F/{name}", json={"value": {
        "src-protocol": "amqp091", "src-uri": "amqp:///%2F", "src-queue": source,
        "dest-protocol": "amqp091", "dest-uri": "amqp:///%2F", "dest-queue": destination,
        "ack-mode": "on-confirm", "src-delete-after": "queue-length"}})
    response.raise_for_status()
    while depth(amqp_url, destination) < count or http.get(f"/api/parameters/shovel/%2F/{name}").status_code != 404:
        time.sleep(0.05)
    return time.monotonic() - started


def check(seen: Counter, ids: list[str]) -> tuple[int, int]:
    lost = sum(1 for i in ids if seen[i] == 0)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)
    return lost, duplicated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cluster = load_clusters(REPO / "clusters.yaml").rabbit_cluster("primary")
    amqp_url = cluster.amqp_url.get_secret_value()
    http = httpx.Client(base_url=cluster.management_url, auth=cluster.management_credentials(), timeout=30)
    results: dict[str, list[tuple[float, int, int]]] = {"engine (confirmed move)": [], "dynamic shovel": []}
    for _ in range(args.rounds):
        for label in results:
            source = f"bench-move-{uuid.uuid4().hex[:8]}"
            ids = fill(amqp_url, source, args.messages)
            if label.startswith("engine"):
                seconds = engine_move(amqp_url, source, source + ".parking", args.messages)
            else:
                seconds = shovel_move(http, amqp_url, source, source + ".parking", args.messages)
            lost, duplicated = check(drain_ids(amqp_url, source + ".parking", args.messages), ids)
            left = depth(amqp_url, source)
            open_amqp(amqp_url, "/", "bench-cleanup").channel().queue_delete(source)
            results[label].append((args.messages / seconds, lost + left, duplicated))
            print(f"{label}: {args.messages / seconds:,.0f} msg/s, lost {lost}, left {left}, duplicated {duplicated}",
                  flush=True)
    report = render(results, args.messages, args.rounds)
    print(report)
    if args.out:
        args.out.write_text(report)


def render(results: dict[str, list[tuple[float, int, int]]], messages: int, rounds: int) -> str:
    rows = []
    medians = {label: statistics.median(r[0] for r in runs) for label, runs in results.items()}
    for label, runs in results.items():
        rows.append(f"| {label} | {medians[label]:,.0f} | {', '.join(f'{r[0]:,.0f}' for r in runs)} | "
                    f"{sum(r[1] for r in runs)} | {sum(r[2] for r in runs)} |")
    engine, shovel = medians.values()
    return "\n".join([
        f"Moving {messages:,} messages of 1 KiB (persistent, durable classic queues) to a parking queue on the "
        f"local primary RabbitMQ 3.10.8, {rounds} round(s), engine and shovel alternately.", "",
        "| mover | median msg/s | each round | lost (incl. left in source) | duplicated |",
        "|---|---:|---|---:|---:|", *rows, "",
        f"Engine / shovel throughput ratio: {engine / shovel:.2f} (load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs).", ""])


if __name__ == "__main__":
    main()
