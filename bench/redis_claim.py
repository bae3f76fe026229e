"""Benchmark: claiming a dead consumer's pending entries (default 100,000) to a healthy consumer on the
local stack's Redis primary, with the engine's claim (mq_runbooks.integrations.redis_streams:
RedisStreams.claim, batched XCLAIM ... JUSTID in one pipeline, given the ids the plan listed) and
with a hand-written XAUTOCLAIM loop (XAUTOCLAIM ... COUNT n JUSTID until the cursor is 0-0),
alternately in the same run. Before each claim a consumer reads every entry without acknowledging;
after it, every entry must be pending on the healthy consumer and none elsewhere (lost = 0).

    .venv/bin/python bench/redis_claim.py [--entries 100000] [--rounds 3] [--out bench/results/redis_claim.md]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import redis.utils  # noqa: E402

from mq_runbooks.base.clusters import load_clusters  # noqa: E402
from mq_runbooks.integrations.redis_streams import RedisStreams  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GROUP, DEAD, HEALTHY = "billing", "billing-dead", "billing-healthy"
AUTOCLAIM_COUNT = 1000  # entries per XAUTOCLAIM call in the reference loop (the engine batches 1,000 ids)


def prepare(client, stream: str, entries: int) -> None:
    """`entries` entries, all read by DEAD and never acknowledged."""
    for start in range(0, entries, 10_000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(entries, start + 10_000)):
            pipe.xadd(stream, {"order": str(i), "amount": "12.50"})
        pipe.execute()
    client.xgroup_create(stream, GROUP, id="0")
    while client.xreadgroup(GROUP, DEAD, {stream: ">"}, count=10_000):
        pass


def owned_by_healthy(client, stream: str, entries: int) -> int:
    """Entries lost: expected pending on HEALTHY and not there (or pending elsewhere)."""
    summary = client.xpending(stream, GROUP)
    owners = {c["name"].decode(): int(c["pending"]) for c in summary["consumers"]}
    return entries - owners.get(HEALTHY, 0) + sum(n for name, n in owners.items() if name != HEALTHY)


def engine_claim(streams: RedisStreams, stream: str) -> tuple[float, float, int]:
    """(seconds for the claim, seconds for listing the pending entries first, entries claimed)."""
    started = time.perf_counter()
    ids = [p.id for p in streams.pending(stream, GROUP, consumer=DEAD)]
    listed = time.perf_counter()
    result = streams.claim(stream, GROUP, ids, HEALTHY)
    return time.perf_counter() - listed, listed - started, len(result.claimed)


def autoclaim_loop(client, stream: str) -> tuple[float, int]:
    # redis-py's XAUTOCLAIM parser drops the cursor of a JUSTID reply: read the raw reply
    client.response_callbacks.pop("XAUTOCLAIM", None)
    started = time.perf_counter()
    cursor, claimed = b"0-0", 0
    while True:
        cursor, ids, _deleted = client.execute_command(
            "XAUTOCLAIM", stream, GROUP, HEALTHY, 0, cursor, "COUNT", AUTOCLAIM_COUNT, "JUSTID")
        claimed += len(ids)
        if cursor in (b"0-0", "0-0"):
            return time.perf_counter() - started, claimed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "redis_claim.md")
    args = parser.parse_args()
    cluster = load_clusters(REPO / "clusters.yaml").redis_cluster("primary")
    client = cluster.client()
    version = client.info("server")["redis_version"]
    load_before = os.getloadavg()[0]
    engine_s: list[float] = []
    listing_s: list[float] = []
    loop_s: list[float] = []
    lost = {"engine": 0, "loop": 0}
    for round_number in range(1, args.rounds + 1):
        for mover in ("engine", "loop"):
            stream = f"bench-claim-{uuid.uuid4().hex[:8]}"
            try:
                prepare(client, stream, args.entries)
                if mover == "engine":
                    with RedisStreams.from_cluster(cluster) as streams:
                        seconds, listing, claimed = engine_claim(streams, stream)
                    engine_s.append(seconds)
                    listing_s.append(listing)
                else:
                    seconds, claimed = autoclaim_loop(client, stream)
                    loop_s.append(seconds)
                lost[mover] += owned_by_healthy(client, stream, args.entries)
                print(f"round {round_number} {mover}: {claimed:,} claimed in {seconds:.3f}s", flush=True)
            finally:
                client.delete(stream)
    engine, listing, loop = (statistics.median(x) for x in (engine_s, listing_s, loop_s))
    parser_name = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "redis-py's Python parser"
    n = args.entries
    report = f"""\
Claiming {n:,} pending entries (read by one consumer, never acknowledged) to another consumer of the
group, on the local stack's Redis primary {version} (with its replica attached), {args.rounds} round(s),
engine and loop alternately, a fresh stream each time.

| claimer | median s | entries/s | each round (s) | lost |
|---|---:|---:|---|---:|
| engine `RedisStreams.claim` (XCLAIM JUSTID, 1,000 ids a command, one pipeline) | {engine:.3f} | {n / engine:,.0f} | {", ".join(f"{s:.3f}" for s in engine_s)} | {lost["engine"]} |
| hand-written XAUTOCLAIM loop (COUNT {AUTOCLAIM_COUNT}, JUSTID) | {loop:.3f} | {n / loop:,.0f} | {", ".join(f"{s:.3f}" for s in loop_s)} | {lost["loop"]} |

Loop / engine time ratio: {loop / engine:.2f} (above 1: the engine is faster).
The engine claims the ids its plan listed; listing them (`RedisStreams.pending`, XPENDING in pages of
1,000) took a further {listing:.3f} s (median), so plan + claim is {engine + listing:.3f} s against the loop's {loop:.3f} s.
"lost": entries not pending on the target consumer afterwards (or still pending elsewhere), summed over the rounds.
Both sides use redis-py {redis.__version__} with {parser_name} for replies. The machine's 2 cores are shared (load
average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after): compare the ratio, not the absolute times.
"""
    args.out.write_text(report)
    print(report)
    return 0 if not any(lost.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
