"""Benchmark: what the engine's signatures add to the alert -> run and approval -> act paths, against
one Prefect API round trip measured in the same run (the machine is shared and noisy: ratios).

Per path, the signing work is:
  - a start (alert, Slack, API, `runbook run`): sign the start (kit/origin.py) when the run is
    created, verify it when the executor takes it;
  - an answer: sign it when judged (kit/gate.py sign_answer), verify it in the run (judge_answer);
  - each journal entry: its HMAC chained to the previous one (kit/journal.py), verified on reads.
The reference is `read_flow_run` of an existing run over a sync Prefect client (the cheapest call
those paths make several times each).

    .venv/bin/python bench/signing.py --rounds 2000

Results are appended to bench/results/signing.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{os.environ.get('STACK_PREFECT_PORT', '4200')}/api")

from mq_runbooks.kit.gate import Approval, _answer_fields, sign_answer  # noqa: E402
from mq_runbooks.kit.journal import Entry, _signed_fields  # noqa: E402
from mq_runbooks.kit.origin import new_idempotency_key, signed_start, started_by_engine  # noqa: E402
from mq_runbooks.kit.signing import sign, verify  # noqa: E402

KEY = b"bench-signing-key-0123456789abcdef"
RUN_ID = "0f6a3c1e-8d2b-4c55-9a0e-5b7d2e9c4f11"


def _per_call_us(function, rounds: int) -> float:
    """Median over 5 batches of the microseconds one call takes."""
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            function()
        batches.append((time.perf_counter() - started) / rounds * 1e6)
    return statistics.median(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()

    parameters = {"params": {"cluster": "primary", "group": "billing", "by_duration": "PT15M"},
                  "requested_by": "alice", "trigger": {"source": "alertmanager", "labels": {
                      "alertname": "KafkaConsumerGroupStuck", "consumergroup": "billing", "severity": "page"}}}
    key_of_run = new_idempotency_key()
    signed = signed_start(KEY, "kafka-replay", parameters, key_of_run)
    answer = sign_answer(KEY, RUN_ID, "gate-1-1", decision="approve", by="carol", proof="token",
                         plan_digest="a" * 64, comment="billing is stopped")
    approval = Approval(**answer)
    plan_rows = [["orders", p, 1000 + p, 0, 0, 2000 + p, f"+{1000 + p}"] for p in range(64)]
    document = Entry(dt.datetime.now(dt.timezone.utc), "plan", "replay 64 partitions",
                     {"columns": ["topic", "partition", "current", "target", "log start", "log end", "delta"],
                      "rows": plan_rows}).to_json()
    document["prev"] = "b" * 64

    costs = {
        "start: sign at creation": _per_call_us(lambda: signed_start(KEY, "kafka-replay", parameters, key_of_run),
                                                args.rounds),
        "start: verify in the executor": _per_call_us(
            lambda: started_by_engine(KEY, "kafka-replay", signed, key_of_run), args.rounds),
        "answer: sign when judged": _per_call_us(lambda: sign_answer(
            KEY, RUN_ID, "gate-1-1", decision="approve", by="carol", proof="token", plan_digest="a" * 64,
            comment="billing is stopped"), args.rounds),
        "answer: verify in the run": _per_call_us(lambda: verify(KEY, "answer", _answer_fields(
            RUN_ID, "gate-1-1", approval.decision, approval.by, approval.proof, approval.plan_digest,
            approval.comment), approval.signature), args.rounds),
        "journal: sign a 64-row plan entry": _per_call_us(
            lambda: sign(KEY, "journal", _signed_fields(RUN_ID, document)), args.rounds),
    }

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=1)
        if not runs:
            raise SystemExit("no flow run on the Prefect server to read (run the demo or a test first)")
        run_id = runs[0].id
        client.read_flow_run(run_id)
        reference = []
        for _ in range(30):
            started = time.perf_counter()
            client.read_flow_run(run_id)
            reference.append((time.perf_counter() - started) * 1e6)
    reference_us = statistics.median(reference)

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"\n## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC (load {load})\n",
             f"Reference: one `read_flow_run` round trip, median of 30: **{reference_us:,.0f} µs**.\n",
             "| signing work | µs per call (median of 5 x {0:,}) | ratio to the round trip |".format(args.rounds),
             "|---|---:|---:|"]
    for name, cost in costs.items():
        lines.append(f"| {name} | {cost:,.1f} | {cost / reference_us:.4f}x |")
    start_path = costs["start: sign at creation"] + costs["start: verify in the executor"]
    answer_path = costs["answer: sign when judged"] + costs["answer: verify in the run"]
    lines.append(f"\nA start adds {start_path:,.0f} µs in all ({start_path / reference_us:.3f} round trips); an "
                 f"answer {answer_path:,.0f} µs ({answer_path / reference_us:.3f}); each journal entry about "
                 f"{costs['journal: sign a 64-row plan entry']:,.0f} µs to write and as much to read.\n")
    text = "\n".join(lines)
    print(text)
    results = REPO / "bench" / "results" / "signing.md"
    if not results.exists():
        results.write_text("# What the engine's signatures cost (bench/signing.py)\n")
    with results.open("a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
