"""Steady traffic for the tests of relative targets (`by_duration`): a topic or a stream whose records
were written over the last hour, one every 6 s, and a writer that keeps adding new ones while a run
waits at its gate, so the window "the last 15 minutes" slides under the run.

    with kafka_writer(config, topic, partitions=2) as written:   # stops by itself after `limit_s`
        ...
    history = kafka_history(config, topic, partitions=2)          # the timestamps written, oldest first

Redis gets entries (`redis_writer`), RocketMQ messages through its proxy (`rocketmq_writer`: the
broker stamps them, so its window is seconds of live traffic, not an hour of history). Everything goes
to the local stack on 127.0.0.1 (clusters.yaml's primary).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from confluent_kafka import Producer

HOUR_MS = 3_600_000
EVERY_MS = 6_000  # one record every 6 s over the last hour: the window's target moves every 6 s
WINDOW_MS = 15 * 60_000  # by_duration=PT15M


def now_ms() -> int:
    return int(time.time() * 1000)


def history_stamps(at_ms: int) -> list[int]:
    """The record timestamps of the last hour before `at_ms`, one every 6 s, oldest first."""
    return list(range(at_ms - HOUR_MS, at_ms, EVERY_MS))


def kafka_history(config: dict, topic: str, partitions: int) -> list[int]:
    """Write the last hour into every partition of `topic` (records with those timestamps); the stamps."""
    stamps = history_stamps(now_ms())
    producer = Producer(config)
    for partition in range(partitions):
        for i, stamp in enumerate(stamps):
            producer.produce(topic, value=b"history-%d" % i, partition=partition, timestamp=stamp)
    assert producer.flush(30) == 0, "the history was not written"
    return stamps


@contextmanager
def writer(write_one: Callable[[], None], every_s: float = 0.1, limit_s: float = 240) -> Iterator[list[int]]:
    """Call `write_one` every `every_s` in a thread until the block ends (or `limit_s` passed, so a
    test that fails cannot leave it running); yields [how many were written so far]."""
    stop = threading.Event()
    written = [0]

    def loop() -> None:
        deadline = time.monotonic() + limit_s
        while not stop.is_set() and time.monotonic() < deadline:
            write_one()
            written[0] += 1
            stop.wait(every_s)

    thread = threading.Thread(target=loop, name="steady-traffic", daemon=True)
    thread.start()
    try:
        yield written
    finally:
        stop.set()
        thread.join(30)


@contextmanager
def kafka_writer(config: dict, topic: str, partitions: int, **timing: float) -> Iterator[list[int]]:
    """New records (timestamped now) into every partition of `topic` while the block runs."""
    producer = Producer(config)

    def write_one() -> None:
        for partition in range(partitions):
            producer.produce(topic, value=b"live", partition=partition)
        producer.poll(0)

    try:
        with writer(write_one, **timing) as written:
            yield written
    finally:
        producer.flush(10)


@contextmanager
def redis_writer(raw, stream: str, **timing: float) -> Iterator[list[int]]:
    """New entries (XADD *: ids of now) into `stream` while the block runs."""
    with writer(lambda: raw.xadd(stream, {"live": "1"}), **timing) as written:
        yield written


@contextmanager
def rocketmq_writer(cluster, topic: str, **timing: float) -> Iterator[list[int]]:
    """New messages into `topic` through the cluster's proxy (gRPC, as applications send) while the
    block runs; RocketMQ stamps each with the time the broker stores it."""
    from mq_runbooks.integrations.rocketmq_grpc import GrpcProducer

    with GrpcProducer.from_cluster(cluster, [topic]) as producer:
        with writer(lambda: producer.send(topic, b"live", keys=["live"], tag="live"), **timing) as written:
            yield written
